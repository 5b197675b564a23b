"""The PACS benchmark on the LiT model (pretrained EfficientNet-Lite0, locked): every claim of
``benchmarks/pacs`` re-measured with a pretrained image encoder.

    python benchmarks/pacs_lit/run_lit.py                    # full: seeds 0-4, pacs.yaml
    python benchmarks/pacs_lit/run_lit.py --config my.yaml   # another strategy grid
    python benchmarks/pacs_lit/run_lit.py --quick --seeds 0  # reduced (what CI runs)

Per seed (the LiT training seed, the ViLU seed and the loop seed): (1) zero-shot
deterministic vs Bayesian on the targets' test split; (2) failure prediction on each target's
test split by ViLU trained on the source domains' labelled val items and on the whole
labelled pool's train items (``VILU_TRAINING``), against MSP, entropy, DOCTOR and the
BayesVLM variance; (3) the active-learning grid of ``--config`` (default
``benchmarks/pacs/pacs.yaml``, the from-scratch model's grid, so new strategies added there
run here too) with this seed's pool. Writes to ``--out``:
``zeroshot.parquet``, ``failure.parquet``, ``al/results.parquet``, ``accuracy_<target>.png``,
``ece_<target>.png`` and ``results.md``. Resumable: a seed's zero-shot and failure tables are
kept under ``seeds/`` and the grid resumes cell by cell, so seeds can run in separate
processes and a last call with all of them assembles the report.

``--quick``: a subset of PACS (per domain, class and split the first 6 train, 2 val and
3 test images, 308 in all; ``QUICK_TRAINING``), ViLU trained on the pool only, 2 rounds of
``QUICK_STRATEGIES``.
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
from activevlm.bench import run_grid
from activevlm.bench.plot import summary_table
from activevlm.data import ImageDataset
from activevlm.evaluation import evaluate_zeroshot
from activevlm.utils.io import atomic_path, atomic_write_parquet, atomic_write_text
from activevlm.vilu import ViLUConfig, fit_vilu_on_pool
from activevlm.vilu.evaluate import evaluate_on_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pacs"))
from lit_model import MODEL_NAME, TrainSettings, lit_pool  # noqa: E402
from pacs_clip import DEFAULT_DATA, SOURCE_DOMAINS, TARGET_DOMAINS, pacs_dataset  # noqa: E402
from run_pacs import _mean_se, to_markdown  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "pacs" / "pacs.yaml"
QUICK_STRATEGIES = ["random-untargeted", "random-targeted", "entropy-untargeted", "epig-targeted"]
QUICK_PER_SPLIT = {"train": 6, "val": 2, "test": 3}
QUICK_TRAINING = {"batch_size": 32, "epochs": 50, "warmup_steps": 20}
"""84 training images: smaller batches and a shorter warm-up so that training takes 150 steps."""
VILU_TRAINING = {"source": {"split": "val", "domain": list(SOURCE_DOMAINS)},
                 "pool": {"split": "train", "domain": None}}
"""ViLU training sets: the source domains' labelled val split (the LiT model makes no error
on the train split it was trained on, so ViLU would have no failures to learn from there;
the from-scratch benchmark used that train split), or the whole labelled pool (every
domain's train split, targets included). Both are disjoint from the test split scored."""
QUICK_VILU = ("pool",)
"""The quick model makes too few errors on its 42 source val images for a source-only ViLU."""
BASELINES = ("random-untargeted", "random", "random-targeted")
"""Paired differences are reported to each of these that the grid ran ("random" is the
untargeted baseline's name in grids written before targeted selection became the default)."""
FAILURE_METHODS = ["vilu", "msp", "entropy", "doctor", "bayesvlm_variance"]


def quick_subset(dataset: ImageDataset) -> ImageDataset:
    """The first ``QUICK_PER_SPLIT[split]`` items (path order) of each domain, class and
    split."""
    items = dataset.items
    rank = items.sort_values("sample_id").groupby(["domain", "label", "split"]).cumcount()
    keep = rank.sort_index() < items["split"].map(QUICK_PER_SPLIT).fillna(0)
    return dataclasses.replace(dataset, items=items[keep].reset_index(drop=True))


def zeroshot_rows(pool, posterior, seed: int) -> pd.DataFrame:
    """Deterministic vs Bayesian zero-shot metrics on the test split of each domain, and of
    the targets and the sources together (``"targets (all)"``, ``"sources (all)"``)."""
    parts = []
    for group, domains in (("targets", TARGET_DOMAINS), ("sources", SOURCE_DOMAINS)):
        df = evaluate_zeroshot(pool, posterior, domain=list(domains), split="test")
        parts.append(df.assign(domain=df["domain"].replace({"all": f"{group} (all)"})))
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "seed", seed)
    return df


def failure_rows(pool, posterior, seed: int, out: Path, progress: bool,
                 training: tuple[str, ...] = tuple(VILU_TRAINING)) -> pd.DataFrame:
    """Failure-prediction metrics per (ViLU training set, target domain, method), the
    BayesVLM predictive variance among the baselines. ``training``: names of
    ``VILU_TRAINING`` sets."""
    rows = []
    for name in training:
        where = VILU_TRAINING[name]
        model = fit_vilu_on_pool(pool, **where, config=ViLUConfig(seed=seed), device="cpu",
                                 progress=progress)
        for target in TARGET_DOMAINS:
            table = evaluate_on_pool(model, pool, split="test", domain=target, device="cpu",
                                     posterior=posterior,
                                     out=out / f"failure_seed{seed}_{name}_{target}")
            table.insert(0, "target", target)
            table.insert(0, "vilu_trained_on", name)
            table.insert(0, "seed", seed)
            rows.append(table)
    return pd.concat(rows, ignore_index=True)


def grid_config(config: Path, pool_path: Path, seed: int, quick: bool) -> dict:
    """``config`` with this seed's pool and seed filled in (reduced with ``quick``)."""
    grid = copy.deepcopy(yaml.safe_load(config.read_text()))
    grid["name"] = f"{grid.get('name', 'pacs')}-lit"
    grid["seeds"] = [seed]
    for ds in grid["datasets"]:
        ds["pool"] = str(pool_path)
    if quick:
        grid["strategies"] = QUICK_STRATEGIES
        grid["loop"]["rounds"] = 2
    return grid


def _cells(rows: pd.DataFrame, diff: bool) -> pd.DataFrame:
    mean, se = ("diff_mean", "diff_se") if diff else ("mean", "se")
    fmt = "{:+.3f}" if diff else "{:.3f}"
    most = rows["n_seeds"].max()
    cell = [fmt.format(m) + ("" if pd.isna(s) else f" ± {s:.3f}")
            + ("" if n == most else f" (n={n})")
            for m, s, n in zip(rows[mean], rows[se], rows["n_seeds"], strict=True)]
    return rows.assign(cell=cell).pivot(index="strategy", columns="n_labels", values="cell")


def markdown_report(zs: pd.DataFrame, fail: pd.DataFrame, al: pd.DataFrame,
                    header: str) -> str:
    """Zero-shot, failure-prediction and active-learning tables (mean ± se over seeds;
    paired differences to each of ``BASELINES``)."""
    zs_t = _mean_se(zs, ["domain", "model"], ["accuracy", "nll", "ece", "brier"])
    fail = fail[fail["method"].isin(FAILURE_METHODS)]
    fail_t = _mean_se(fail, ["target", "vilu_trained_on", "method"],
                      ["auroc", "fpr_at_95tpr", "aupr_error", "aurc"])
    lines = [header, "", "### Zero-shot on the test splits (targets: cartoon, sketch; "
             "sources: photo, art_painting)", "", to_markdown(zs_t), "",
             "### Failure prediction on the target test splits", "",
             "`vilu_trained_on`: which labelled train items ViLU learnt from (the baselines do "
             "not learn and repeat).", "", to_markdown(fail_t), "",
             "### Active learning: target test accuracy", ""]
    ran = set(al["strategy"])
    tables = {b: summary_table(al, "accuracy", baseline=b) for b in BASELINES if b in ran}
    for target, rows in summary_table(al, "accuracy").groupby("target", sort=False):
        lines += [f"Target {target}:", "", to_markdown(_cells(rows, diff=False)), ""]
        for base, table in tables.items():
            rows_b = table[(table["target"] == target) & (table["strategy"] != base)]
            if "diff_mean" in rows_b:
                lines += [f"Target {target}, accuracy minus {base} (paired by seed):", "",
                          to_markdown(_cells(rows_b, diff=True)), ""]
    return "\n".join(lines)


def plot_curves(al: pd.DataFrame, out: Path, n_test: dict[str, int]) -> list[Path]:
    """``accuracy_<target>.png`` and ``ece_<target>.png``: mean ± se over seeds per strategy,
    titled with the dataset, model, split, test-set size and seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted(al["seed"].unique())
    paths = []
    for metric in ("accuracy", "ece"):
        table = summary_table(al, metric)
        for target, rows in table.groupby("target", sort=False):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for strategy, r in rows.groupby("strategy", sort=False):
                r = r.sort_values("n_labels")
                x, m = r["n_labels"].to_numpy(), r["mean"].to_numpy()
                se = r["se"].fillna(0).to_numpy()
                style = "-" if "targeted" in strategy or strategy.startswith("random") else "--"
                (line,) = ax.plot(x, m, style, marker="o", ms=3, label=strategy)
                ax.fill_between(x, m - se, m + se, color=line.get_color(), alpha=0.15)
            ax.set_title(f"PACS {target}, test split (n = {n_test[target]}): {metric} vs labels\n"
                         f"{MODEL_NAME} (EfficientNet-Lite0 locked), seeds "
                         f"{', '.join(map(str, seeds))}: mean ± se", fontsize=9)
            ax.set_xlabel("labels")
            ax.set_ylabel(f"target test {metric}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            path = out / f"{metric}_{target}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=110)
            plt.close(fig)
            paths.append(path)
    return paths


def run_benchmark(data: Path, out: Path, seeds: list[int], *, config: Path = DEFAULT_CONFIG,
                  quick: bool = False, settings: TrainSettings = TrainSettings(),
                  progress: bool = True, log=print) -> dict[str, pd.DataFrame]:
    """Run every part for every seed; returns the ``zeroshot``, ``failure`` and ``al``
    tables (also written under ``out`` with the plots and ``results.md``)."""
    t0 = time.time()
    dataset = pacs_dataset(data)
    if quick:
        dataset = quick_subset(dataset)
        settings = dataclasses.replace(settings, **QUICK_TRAINING)
    for seed in seeds:
        pool = lit_pool(dataset, dataclasses.replace(settings, seed=seed), progress=progress,
                        log=log)
        done = out / "seeds" / f"seed{seed}"
        if not (done / "failure.parquet").is_file():  # a finished seed is read back
            posterior = fit_pool_posterior(pool, split="train", domain=list(SOURCE_DOMAINS),
                                           device="cpu", progress=progress)
            atomic_write_parquet(done / "zeroshot.parquet", zeroshot_rows(pool, posterior, seed))
            atomic_write_parquet(done / "failure.parquet",
                                 failure_rows(pool, posterior, seed, out, progress,
                                              QUICK_VILU if quick else tuple(VILU_TRAINING)))
        run_grid(grid_config(config, pool.path, seed, quick), out / "al" / f"seed{seed}",
                 progress=progress, log=log)
        log(f"seed {seed} done ({time.time() - t0:.0f} s)")
    return write_report(out, seeds, dataset, config=config, quick=quick,
                        seconds=time.time() - t0)


def write_report(out: Path, seeds: list[int], dataset: ImageDataset, *,
                 config: Path = DEFAULT_CONFIG, quick: bool = False,
                 seconds: float | None = None) -> dict[str, pd.DataFrame]:
    """Gather the seeds' tables found under ``out`` (a run still going contributes what it
    has finished: the header lists the seeds and grid cells present), write the combined
    tables, the plots and ``results.md``; returns the tables."""
    def read(files: list[Path]) -> pd.DataFrame:
        found = [pd.read_parquet(f) for f in files if f.is_file()]
        if not found:
            raise FileNotFoundError(f"no results under {out} for seeds {seeds}")
        return pd.concat(found, ignore_index=True)

    tables = {"zeroshot": read([out / "seeds" / f"seed{k}" / "zeroshot.parquet" for k in seeds]),
              "failure": read([out / "seeds" / f"seed{k}" / "failure.parquet" for k in seeds]),
              "al": read([out / "al" / f"seed{k}" / "results.parquet" for k in seeds])}
    atomic_write_parquet(out / "zeroshot.parquet", tables["zeroshot"])
    atomic_write_parquet(out / "failure.parquet", tables["failure"])
    atomic_write_parquet(out / "al" / "results.parquet", tables["al"])
    test = dataset.items[dataset.items["split"] == "test"]
    plot_curves(tables["al"], out, test["domain"].value_counts().to_dict())
    cells = tables["al"].groupby(["target", "strategy"])["seed"].nunique()
    header = (f"PACS benchmark on {MODEL_NAME} ({'quick' if quick else 'full'}), config "
              f"{config.name}; seeds with zero-shot and failure tables: "
              f"{sorted(tables['failure']['seed'].unique().tolist())}; grid cells "
              f"(target x strategy) with all {len(seeds)} seeds: "
              f"{int((cells == len(seeds)).sum())} of {len(cells)}"
              + ("" if seconds is None else f"; {seconds:.0f} s"))
    atomic_write_text(out / "results.md", markdown_report(
        tables["zeroshot"], tables["failure"], tables["al"], header))
    return tables


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="strategy grid (YAML as for `activevlm bench`; pool filled in)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pacs_lit"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="a PACS subset, fewer strategies")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true",
                        help="only gather what the seeds have finished into the report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report_only:
        dataset = pacs_dataset(args.data)
        write_report(args.out, args.seeds, quick_subset(dataset) if args.quick else dataset,
                     config=args.config, quick=args.quick)
    else:
        run_benchmark(args.data, args.out, args.seeds, config=args.config, quick=args.quick,
                      settings=TrainSettings(epochs=args.epochs, threads=args.threads))
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
