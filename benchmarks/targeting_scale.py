"""Targeted selection's k-NN at pool scale: exact search streamed from the shards vs FAISS.

The search ``select`` runs for targeting: ``Q`` target points (default 5,000 = neighbourhood
10 x budget 500), ``k = 9`` neighbours each, the non-candidate rows (default 40 %) excluded,
over ``N`` pool embeddings (D = 512, clustered like scale.py's pools) stored as 65,536-row
``.npy`` shards, as ``select`` writes them. Each method runs in a fresh process; its wall
time and peak RSS (``wait4`` high-water mark, minus the same process's RSS after imports)
are printed with the ratio to the streamed search, and the recall@9 of each method against
the streamed result (which is exact by construction).

- ``streamed``: :class:`StreamedNeighbours` over the shards (no index, nothing to build);
- ``flat build+search``: ``EmbeddingIndex.build`` (exact ``IndexFlatIP``) + the search;
- ``ivf-mem``: the in-memory IVF build (k-means on 64·nlist rows, 25 iterations) + search;
- ``ivf-build``: the bounded-memory IVF select builds at N >= 10^6 (k-means on 32·nlist
  rows, 10 iterations, filled per shard, lists merged on disk), calibrated, saved;
- ``ivf-search``: what a later round pays with that saved index (load + search).

    python benchmarks/targeting_scale.py --n 100000
    python benchmarks/targeting_scale.py --n 1000000 --methods streamed,flat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D, K, SHARD = 512, 9, 65536
METHODS = ("streamed", "flat", "ivf-mem", "ivf-build", "ivf-search")


def write_shards(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Clustered embeddings (65 means + noise) as ``emb-NNNNN.npy``; reused when present."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((65, D)).astype(np.float32)
    files = []
    for k, start in enumerate(range(0, n, SHARD)):
        f = folder / f"emb-{k:05d}.npy"
        m = min(n, start + SHARD) - start
        g = np.random.default_rng([seed, k])
        if not f.exists():
            x = means[g.integers(0, 65, m)] + 2.0 * g.standard_normal((m, D), dtype=np.float32)
            np.save(f.with_suffix(".tmp.npy"), x)
            f.with_suffix(".tmp.npy").rename(f)
        files.append(f)
    return files


def child(method: str, folder: Path, n: int, queries: int, excluded: float) -> None:
    """One method in this (fresh) process; prints a JSON line."""
    import faiss

    from activevlm.index import EmbeddingIndex, StreamedNeighbours
    from activevlm.pool.sharded import ShardedArray

    def rss() -> int:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(s.split()[1]) * 1024 for s in status if s.startswith("VmRSS:"))

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    files = sorted(folder.glob("emb-*.npy"))
    rng = np.random.default_rng(1)
    rows = rng.choice(n, queries, replace=False)
    mask = rng.random(n) < excluded
    emb = ShardedArray(files, D)
    q = emb[np.sort(rows)]
    base = rss()
    t0 = time.perf_counter()
    extra = {}
    if method == "streamed":
        _, ids = StreamedNeighbours(files, D).search(q, K, exclude=mask)
    elif method == "flat":
        index = EmbeddingIndex.build(emb, ivf_threshold=n + 1, progress=False)
        extra["build_s"] = time.perf_counter() - t0
        _, ids = index.search(q, K, exclude=mask)
    elif method == "ivf-mem":
        index = EmbeddingIndex.build(emb, ivf_threshold=1, progress=False)
        extra = {"build_s": time.perf_counter() - t0, "nprobe": index.nprobe}
        _, ids = index.search(q, K, exclude=mask)
    elif method == "ivf-build":
        index = EmbeddingIndex.build(emb, ivf_threshold=1, progress=False, on_disk=folder,
                                     on_disk_name="ivf")
        index.save(folder, "ivf")
        extra = {"nlist": index._cpu.nlist, "nprobe": index.nprobe, "recall_calib": index.recall}
        ids = None
    else:  # ivf-search
        index = EmbeddingIndex.load(folder, "ivf")
        _, ids = index.search(q, K, exclude=mask)
    wall = time.perf_counter() - t0
    if ids is not None:
        np.save(folder / f"ids-{method}.npy", ids)
    print(json.dumps({"method": method, "wall_s": wall, "base_rss": base, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--excluded", type=float, default=0.4)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", "/tmp")) / "activevlm-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = args.cache / f"targeting-{args.n}"
    if args.child:
        child(args.child, folder, args.n, args.queries, args.excluded)
        return
    t0 = time.perf_counter()
    write_shards(folder, args.n)
    print(f"shards in {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = {}
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--n", str(args.n), "--queries", str(args.queries),
               "--excluded", str(args.excluded), "--cache", str(args.cache), "--child", method]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"{method} failed")
        r = json.loads(out.strip().splitlines()[-1])
        r.update(peak_gb=usage.ru_maxrss / 2**20, grown_gb=usage.ru_maxrss / 2**20
                 - r["base_rss"] / 2**30, process_s=time.perf_counter() - t, cpu_s=cpu)
        results[method] = r
        print(json.dumps(r), flush=True)
    exact_file = folder / "ids-streamed.npy"  # from this or an earlier run
    exact = np.load(exact_file) if exact_file.exists() else None
    print(f"\nN={args.n:,}, Q={args.queries}, k={K}, {args.excluded:.0%} excluded, "
          f"{args.threads} threads")
    print("| method | search wall s | CPU s (process) | peak RSS GB | RSS grown GB | "
          "recall@9 vs exact | notes |")
    print("|---|---|---|---|---|---|---|")
    ref = results.get("streamed")
    for method, r in results.items():
        recall = "—"
        f = folder / f"ids-{method}.npy"
        if exact is not None and f.exists():
            ids = np.load(f)
            hits = [len(set(a) & set(b)) / K for a, b in zip(exact, ids, strict=True)]
            recall = f"{np.mean(hits):.3f}"
        ratio = f" ({r['wall_s'] / ref['wall_s']:.2f}x streamed)" if ref else ""
        notes = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in r.items() if k in ("build_s", "nlist", "nprobe",
                                                         "recall_calib"))
        print(f"| {method} | {r['wall_s']:.1f}{ratio} | {r['cpu_s']:.0f} | "
              f"{r['peak_gb']:.2f} | {r['grown_gb']:.2f} | {recall} | {notes} |")


if __name__ == "__main__":
    main()
