"""The PACS benchmark: train a tiny CLIP on the source domains, then test activevlm's claims
on the held-out target domains (cartoon, sketch), for several seeds.

    python benchmarks/pacs/run_pacs.py                       # full: seeds 0 1 2
    python benchmarks/pacs/run_pacs.py --quick --seeds 0     # reduced (what CI runs)

Per seed (the model's training seed and the loop seed): (1) zero-shot deterministic vs
Bayesian (accuracy, NLL, ECE, Brier) on the targets' test split; (2) failure prediction on
each target's test split: ViLU trained on the source domains' labelled train split, and on
all domains' train split (the labelled pool), against MSP, entropy, DOCTOR (AUROC, FPR95,
AUPR-Error); (3) active-learning curves (``pacs.yaml``). Writes to ``--out``:
``zeroshot.parquet``, ``failure.parquet``, ``al/results.parquet``, the plots
(``accuracy_*.png``, ``ece_*.png``, ``risk_coverage_*.png``) and ``results.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bench import plot_results, run_grid
from activevlm.bench.plot import BASELINE, summary_table
from activevlm.evaluation import evaluate_zeroshot
from activevlm.utils.io import atomic_write_parquet, atomic_write_text
from activevlm.vilu import ViLUConfig, fit_vilu_on_pool
from activevlm.vilu.evaluate import evaluate_on_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pacs_clip import (  # noqa: E402
    DEFAULT_DATA,
    SOURCE_DOMAINS,
    TARGET_DOMAINS,
    TrainSettings,
    pacs_dataset,
    pacs_pool,
)

GRID_CONFIG = Path(__file__).resolve().parent / "pacs.yaml"
QUICK_STRATEGIES = ["random-untargeted", "entropy-untargeted", "epig-untargeted",
                    "vilu-untargeted"]
VILU_TRAINING = {"source": {"split": "train", "domain": list(SOURCE_DOMAINS)},
                 "pool": {"split": "train", "domain": None}}
"""ViLU training sets: labelled source-domain items, or the whole labelled pool (every
domain's train split, targets included; disjoint from the test split it is scored on)."""


def zeroshot_rows(pool, posterior, seed: int) -> pd.DataFrame:
    """Deterministic vs Bayesian zero-shot metrics on each target's test split (+ "all")."""
    df = evaluate_zeroshot(pool, posterior, domain=list(TARGET_DOMAINS), split="test")
    df.insert(0, "seed", seed)
    return df


def failure_rows(pool, seed: int, out: Path, progress: bool) -> pd.DataFrame:
    """Failure-prediction metrics per (ViLU training set, target domain, method)."""
    rows = []
    for name, where in VILU_TRAINING.items():
        model = fit_vilu_on_pool(pool, **where, config=ViLUConfig(seed=seed), device="cpu",
                                 progress=progress)
        for target in TARGET_DOMAINS:
            table = evaluate_on_pool(model, pool, split="test", domain=target, device="cpu",
                                     out=out / f"failure_seed{seed}_{name}_{target}")
            table.insert(0, "target", target)
            table.insert(0, "vilu_trained_on", name)
            table.insert(0, "seed", seed)
            rows.append(table)
    return pd.concat(rows, ignore_index=True)


def grid_config(pool_path: Path, seed: int, quick: bool) -> dict:
    """``pacs.yaml`` with the pool path and the seed filled in (reduced with ``quick``)."""
    config = copy.deepcopy(yaml.safe_load(GRID_CONFIG.read_text()))
    config["seeds"] = [seed]
    config["datasets"][0]["pool"] = str(pool_path)
    if quick:
        config["strategies"] = QUICK_STRATEGIES
        config["loop"]["rounds"] = 2
    return config


def _fmt(mean: float, se: float) -> str:
    return f"{mean:.3f}" if pd.isna(se) else f"{mean:.3f} ± {se:.3f}"


def _mean_se(df: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    g = df.groupby(keys, sort=False)[metrics]
    mean, se = g.mean(), g.std(ddof=1) / g.count() ** 0.5
    out = mean.copy().astype(object)
    for m in metrics:
        out[m] = [_fmt(a, b) for a, b in zip(mean[m], se[m], strict=True)]
    return out.reset_index()


def to_markdown(df: pd.DataFrame) -> str:
    """A DataFrame (its named index too, when not a RangeIndex) as a Markdown table."""
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float)
                                else str(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def markdown_report(zs: pd.DataFrame, fail: pd.DataFrame, al: pd.DataFrame,
                    header: str) -> str:
    """The results as Markdown tables (mean ± standard error over seeds)."""
    zs_t = _mean_se(zs, ["domain", "model"], ["accuracy", "nll", "ece", "brier"])
    fail = fail[fail["method"].isin(["vilu", "msp", "entropy", "doctor"])]
    fail_t = _mean_se(fail, ["target", "vilu_trained_on", "method"],
                      ["accuracy", "auroc", "fpr_at_95tpr", "aupr_error"])
    acc = summary_table(al, "accuracy")
    lines = [header, "", "### Zero-shot on the target test splits", "",
             to_markdown(zs_t), "",
             "### Failure prediction on the target test splits", "",
             "`vilu_trained_on`: which labelled train items ViLU learnt from (the baselines "
             "do not learn and repeat).", "", to_markdown(fail_t), "",
             "### Active learning: target test accuracy (mean ± se over seeds)", ""]
    for target, rows in acc.groupby("target", sort=False):
        wide = rows.assign(cell=[_fmt(m, s) for m, s in zip(rows["mean"], rows["se"],
                                                               strict=True)])
        wide = wide.pivot(index="strategy", columns="n_labels", values="cell")
        lines += [f"Target {target}:", "", to_markdown(wide), ""]
        if "diff_mean" in rows:
            diff = rows[rows["strategy"] != BASELINE]
            diff = diff.assign(cell=[f"{m:+.3f}" + ("" if pd.isna(s) else f" ± {s:.3f}")
                                     for m, s in zip(diff["diff_mean"], diff["diff_se"],
                                                     strict=True)])
            lines += [f"Target {target}, accuracy minus {BASELINE} (paired by seed):", "",
                      to_markdown(diff.pivot(index="strategy", columns="n_labels",
                                            values="cell")), ""]
    return "\n".join(lines)


def run_benchmark(data: Path, out: Path, seeds: list[int], *, quick: bool = False,
                  settings: TrainSettings = TrainSettings(), progress: bool = True,
                  log=print) -> dict[str, pd.DataFrame]:
    """Run every part for every seed; returns the ``zeroshot``, ``failure`` and ``al``
    tables (also written under ``out`` with the plots and ``results.md``)."""
    t0 = time.time()
    dataset = pacs_dataset(data)
    zs, fail, al = [], [], []
    for seed in seeds:
        pool = pacs_pool(dataset, dataclasses.replace(settings, seed=seed), progress=progress,
                         log=log)
        posterior = fit_pool_posterior(pool, split="train", domain=list(SOURCE_DOMAINS),
                                       device="cpu", progress=progress)
        zs.append(zeroshot_rows(pool, posterior, seed))
        fail.append(failure_rows(pool, seed, out, progress))
        results = run_grid(grid_config(pool.path, seed, quick), out / "al" / f"seed{seed}",
                           progress=progress, log=log)
        al.append(pd.read_parquet(results))
        log(f"seed {seed} done ({time.time() - t0:.0f} s)")
    tables = {"zeroshot": pd.concat(zs, ignore_index=True),
              "failure": pd.concat(fail, ignore_index=True),
              "al": pd.concat(al, ignore_index=True)}
    atomic_write_parquet(out / "zeroshot.parquet", tables["zeroshot"])
    atomic_write_parquet(out / "failure.parquet", tables["failure"])
    atomic_write_parquet(out / "al" / "results.parquet", tables["al"])
    plot_results(tables["al"], out)
    header = (f"PACS benchmark ({'quick' if quick else 'full'}), seeds {seeds}, "
              f"{time.time() - t0:.0f} s")
    atomic_write_text(out / "results.md", markdown_report(
        tables["zeroshot"], tables["failure"], tables["al"], header))
    return tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pacs"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="fewer strategies and rounds")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_benchmark(args.data, args.out, args.seeds, quick=args.quick,
                  settings=TrainSettings(epochs=args.epochs, threads=args.threads))
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
