"""``activevlm select`` on synthetic pools of 10^4-10^6 items: wall, peak RSS, throughput.

Each pool is written in the real pool format (manifest, items, memory-mapped activation
shards, head, class text activations) with ViT-B-32 dims (d_img 768, D 512, d_txt 512) and
C = 65 classes: activations are class means plus noise, so predictions and neighbourhoods
have structure. 80 % of the items are domain ``source``, 20 % ``target``; splits 64/16/20.
Every (N, strategy) runs the ``activevlm select`` command twice in fresh processes on one
run directory: round 1 (cold: fits the posterior, builds the index) and round 2 (warm:
reuses them, as every later round does). Peak RSS is the child process's high-water mark
(``wait4``); throughput = pool items scored per second of round-2 wall time. The last column
compares round 1 with main's numbers quoted in issue 17 (same machine class, 2 cores).

    python benchmarks/scale.py --sizes 10000,100000            # builds pools under .bench/
    python benchmarks/scale.py --sizes 1000000 --strategies epig-targeted,entropy-untargeted
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from activevlm.models.head import ProjectionHead
from activevlm.pool import layout
from activevlm.utils.io import atomic_write_json, atomic_write_parquet

D_IMG, D, D_TXT, C = 768, 512, 512, 65
SHARD = 65536
# issue 17, measured on main (wall s, peak RSS GB) for `select --budget 500`
MAIN = {(100_000, "epig-targeted"): (35, 2.3), (100_000, "bald-untargeted"): (147, 2.4),
        (1_000_000, "entropy-untargeted"): (58, 4.3),
        (1_000_000, "random-targeted"): (305, 9.0),
        (1_000_000, "epig-targeted"): (445, 9.1), (1_000_000, "bald-untargeted"): (1287, 6.1)}
STRATEGIES = ("epig-targeted", "random-targeted", "entropy-untargeted", "bald-untargeted")


def build_pool(out: Path, n: int, seed: int = 0) -> Path:
    """Write a synthetic pool of ``n`` items (skipped when a complete one is there)."""
    if (out / layout.MANIFEST).exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / layout.SHARD_DIR).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((C, D_IMG)).astype(np.float32)
    labels = rng.integers(0, C, n)
    domain = np.where(rng.random(n) < 0.8, "source", "target")
    split = rng.choice(["train", "val", "test"], size=n, p=[0.64, 0.16, 0.20])
    shards = []
    for k, start in enumerate(range(0, n, SHARD)):
        stop = min(n, start + SHARD)
        g = np.random.default_rng([seed, k])
        act = means[labels[start:stop]] + 2.0 * g.standard_normal((stop - start, D_IMG),
                                                                  dtype=np.float32)
        np.save(layout.shard_file(tmp, "image_act", k), act)
        atomic_write_json(layout.shard_file(tmp, "marker", k),
                          {"index": k, "plan_rows": [start, stop], "rows": stop - start,
                           "failed": []})
        shards.append({"index": k, "rows": stop - start})
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(D, D_IMG, generator=g) / D_IMG**0.5
    w_txt = torch.randn(D, D_TXT, generator=g) / D_TXT**0.5
    head = ProjectionHead(w_img, w_txt, logit_scale=100.0)
    # class prompts whose text embeddings point at the class means' image embeddings
    text = torch.linalg.lstsq(w_txt, w_img @ torch.from_numpy(means).T).solution.T
    np.save(tmp / layout.TEXT_ACT, (text + 0.1 * torch.randn(C, D_TXT, generator=g)).numpy())
    head.save(tmp / layout.HEAD)
    items = pd.DataFrame({"sample_id": [f"img/{i:08d}.jpg" for i in range(n)],
                          "path": [f"/synthetic/img/{i:08d}.jpg" for i in range(n)],
                          "label": labels.astype(np.int64), "domain": domain, "split": split})
    atomic_write_parquet(tmp / layout.PLAN, items)
    atomic_write_parquet(tmp / layout.ITEMS, items)
    atomic_write_parquet(tmp / layout.FAILURES, pd.DataFrame(columns=layout.FAILURE_COLUMNS))
    manifest = {
        "format": layout.FORMAT, "format_version": layout.FORMAT_VERSION, "status": "complete",
        "activevlm_version": "synthetic", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"model_id": f"synthetic-vit-b-32@seed={seed}", "name": "synthetic",
                  "pretrained": None, "checkpoint": None, "family": "clip",
                  "precision": "fp32", "preprocess": "none"},
        "dims": {"image_act": D_IMG, "text_act": D_TXT, "embed": D, "residual": None},
        "dtype": layout.DTYPE, "shard_size": SHARD,
        "counts": {"planned": n, "items": n, "failures": 0, "shards": len(shards)},
        "templates": {"name": "simple", "prompts": ["a photo of a {}."]},
        "classnames": [f"class_{c:02d}" for c in range(C)],
        "dataset": {"name": "synthetic", "description": {"layout": "synthetic", "n": n}},
        "arrays": ["image_act"], "shards": shards,
    }
    atomic_write_json(tmp / layout.MANIFEST, manifest)
    tmp.rename(out)
    return out


def run_child(args: list[str], env: dict) -> tuple[float, float, int, float]:
    """Run a command; (wall seconds, peak RSS GB of that process, exit status, CPU seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(out.decode(errors="replace")[-3000:])
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 2**20, proc.returncode, cpu  # ru_maxrss is in KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--work", type=Path, default=Path(".bench/scale"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="1 = cold round only")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        t0 = time.perf_counter()
        pool = build_pool(args.work / f"pool-{n}", n)
        print(f"pool {pool} ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        for strategy in args.strategies.split(","):
            run = args.work / f"run-{n}-{strategy}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "activevlm.cli.main", "select", "--pool", str(pool),
                   "--target", "target", "--strategy", strategy, "--budget",
                   str(args.budget), "--run", str(run), "--no-progress",
                   "--force"]  # round 2 queues although round 1 is unlabelled
            for r in range(1, args.rounds + 1):
                load = os.getloadavg()[0]
                wall, rss, status, cpu = run_child(cmd, env)
                base = MAIN.get((n, strategy)) if r == 1 else None
                rows.append({"N": n, "strategy": strategy, "round": r, "wall_s": wall,
                             "cpu_s": cpu, "load_before": load, "load_after":
                             os.getloadavg()[0], "peak_rss_gb": rss, "status": status,
                             "items_per_s": n / wall,
                             "main_wall_s": base[0] if base else None,
                             "main_rss_gb": base[1] if base else None})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| N | strategy | round | wall s | CPU s | load 1 min before/after | peak RSS GB | "
          "pool items/s | main wall s (ratio main/ours) | main RSS GB (ratio) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "" if r["status"] == 0 else " (FAILED)"
        wall = (f"{r['main_wall_s']} ({r['main_wall_s'] / r['wall_s']:.1f}x)"
                if r["main_wall_s"] else "—")
        rss = (f"{r['main_rss_gb']} ({r['main_rss_gb'] / r['peak_rss_gb']:.1f}x)"
               if r["main_rss_gb"] else "—")
        print(f"| {r['N']:,} | {r['strategy']}{ok} | {r['round']} | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.0f} | {r['load_before']:.1f}/{r['load_after']:.1f} | "
              f"{r['peak_rss_gb']:.2f} | {r['items_per_s']:,.0f} | {wall} | {rss} |")


if __name__ == "__main__":
    main()
