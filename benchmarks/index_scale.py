"""FAISS index at pool scale: exclusions (over-fetch vs FAISS's ID selector) and IVF recall.

1. Flat index of N embeddings (D = 512), 256 queries, k = 10, 10 % of rows excluded:
   ``EmbeddingIndex.search`` (over-fetch and filter) vs the same search through
   ``IDSelectorBitmap`` (what select did before), and without exclusions; same results.
2. IVF (``nlist = 4√N``, trained on ``64·nlist`` sampled rows, filled chunk by chunk):
   recall@10 against exact search for nprobe = 1, 2, 4, ... and the nprobe the build
   calibrates for ``target_recall`` 0.95, with search time per 256 queries at each.

Embeddings are clustered (65 class means + noise, like the synthetic pools of scale.py).

    python benchmarks/index_scale.py --n 200000
    python benchmarks/index_scale.py --n 1000000 --ivf
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from activevlm.index import EmbeddingIndex
from activevlm.index.embedding_index import _normalised, exact_neighbours, ivf_recall


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((65, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 65536):
        m = min(n, i + 65536) - i
        out[i:i + m] = means[rng.integers(0, 65, m)] + 2.0 * rng.standard_normal(
            (m, d), dtype=np.float32)
    return out


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--ivf", action="store_true", help="also the IVF recall table")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    emb = clustered(args.n, 512)
    rng = np.random.default_rng(1)
    queries = emb[rng.choice(args.n, args.queries, replace=False)] + rng.standard_normal(
        (args.queries, 512), dtype=np.float32)
    excluded = rng.random(args.n) < 0.1

    flat = EmbeddingIndex.build(emb, ivf_threshold=args.n + 1, progress=False)
    q = _normalised(queries)
    bitmap = np.packbits(~excluded, bitorder="little")
    selector = faiss.IDSelectorBitmap(args.n, faiss.swig_ptr(bitmap))
    t_plain = best_of(lambda: flat.search(queries, 10))
    t_ours = best_of(lambda: flat.search(queries, 10, exclude=excluded))
    t_sel = best_of(lambda: flat._cpu.search(q, 10, params=faiss.SearchParameters(sel=selector)))
    same = np.array_equal(flat.search(queries, 10, exclude=excluded)[1],
                          flat._cpu.search(q, 10, params=faiss.SearchParameters(sel=selector))[1])
    print(f"\nflat index, N={args.n:,}, {args.queries} queries, k=10, 10% excluded, "
          f"{args.threads} threads (best of 3)")
    print("| search | seconds | vs selector |")
    print("|---|---|---|")
    print(f"| no exclusion | {t_plain:.3f} | {t_sel / t_plain:.1f}x faster |")
    print(f"| exclusion, over-fetch (ours) | {t_ours:.3f} | {t_sel / t_ours:.1f}x faster |")
    print(f"| exclusion, IDSelectorBitmap (before) | {t_sel:.3f} | 1.0x |")
    print(f"identical ids: {same}")

    if not args.ivf:
        return
    t0 = time.perf_counter()
    ivf = EmbeddingIndex.build(emb, ivf_threshold=1, progress=False)
    build = time.perf_counter() - t0
    nlist = ivf._cpu.nlist
    sample = np.sort(rng.choice(args.n, 256, replace=False))
    exact = exact_neighbours(emb, sample, 10)
    print(f"\nIVF, N={args.n:,}, nlist={nlist}, build incl. calibration {build:.0f} s; "
          f"calibrated nprobe={ivf.nprobe} (recall@10 {ivf.recall:.3f} on its own sample)")
    print("| nprobe | recall@10 (fresh sample) | search s / 256 queries | flat s |")
    print("|---|---|---|---|")
    nprobe = 1
    while nprobe <= nlist:
        recall = ivf_recall(ivf._cpu, emb, sample, nprobe, exact=exact)
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        t = best_of(lambda p=params: ivf._cpu.search(q, 10, params=p))
        mark = " (chosen)" if nprobe == ivf.nprobe else ""
        print(f"| {nprobe}{mark} | {recall:.3f} | {t:.3f} | {t_plain:.3f} |")
        if recall >= 0.999:
            break
        nprobe *= 2


if __name__ == "__main__":
    main()
