"""Curves and a summary table from a benchmark's ``results.parquet`` or a loop's metrics.

Accuracy (and ECE) versus the number of labels, mean ± standard error over seeds, one line
per strategy and one figure per (dataset, target); ``summary.md``: mean ± se per strategy at
each budget and the paired (same seed) difference to ``random-untargeted``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from activevlm.utils.io import atomic_path, atomic_write_text

GROUP = ["dataset", "target", "strategy", "n_labels"]
BASELINE = "random-untargeted"


def _se(x: pd.Series) -> float:
    """Standard error of the mean (sample std / √n); NaN for fewer than 2 values."""
    x = x.dropna()
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def summary_table(results: pd.DataFrame, metric: str = "accuracy",
                  baseline: str = BASELINE) -> pd.DataFrame:
    """Per (dataset, target, strategy, n_labels): ``mean``, ``se``, ``n_seeds`` of ``metric``
    and, when ``baseline`` was run, ``diff_mean``/``diff_se`` of the per-seed difference
    ``metric(strategy) − metric(baseline)`` (seeds present in both)."""
    if metric not in results:
        raise ValueError(f"results have no column {metric!r}; columns: {list(results.columns)}")
    g = results.groupby(GROUP)[metric]
    table = pd.DataFrame({"mean": g.mean(), "se": g.apply(_se), "n_seeds": g.count()})
    table = table.reset_index()
    base = results[results["strategy"] == baseline]
    if base.empty:
        return table
    keys = ["dataset", "target", "n_labels", "seed"]
    paired = results.merge(base[keys + [metric]], on=keys, suffixes=("", "_base"))
    paired["diff"] = paired[metric] - paired[f"{metric}_base"]
    d = paired.groupby(GROUP)["diff"]
    diffs = pd.DataFrame({"diff_mean": d.mean(), "diff_se": d.apply(_se)}).reset_index()
    return table.merge(diffs, on=GROUP, how="left")


def _fmt(mean: float, se: float, digits: int = 3, signed: bool = False) -> str:
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return m if np.isnan(se) else f"{m} ± {se:.{digits}f}"


def _markdown(table: pd.DataFrame, value: str) -> str:
    """A strategies x budgets Markdown table of ``value`` ("acc" or "diff") cells."""
    budgets = sorted(table["n_labels"].unique())
    lines = ["| strategy | " + " | ".join(str(b) for b in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for strategy, rows in table.groupby("strategy", sort=False):
        by_n = rows.set_index("n_labels")
        cells = []
        for b in budgets:
            if b not in by_n.index:
                cells.append("")
            elif value == "acc":
                cells.append(_fmt(by_n.loc[b, "mean"], by_n.loc[b, "se"]))
            else:
                cells.append(_fmt(by_n.loc[b, "diff_mean"], by_n.loc[b, "diff_se"],
                                  signed=True))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PREDICTIVES = {"deterministic": "", "Bayesian (probit)": "bayes_"}


def _curve(ax, table: pd.DataFrame, ylabel: str, log: bool = False) -> None:
    for strategy, rows in table.groupby("strategy", sort=False):
        rows = rows.sort_values("n_labels")
        x, m = rows["n_labels"].to_numpy(), rows["mean"].to_numpy()
        se = np.nan_to_num(rows["se"].to_numpy())
        (line,) = ax.plot(x, m, marker="o", ms=3, label=strategy)
        ax.fill_between(x, m - se, m + se, color=line.get_color(), alpha=0.2)
    if log:  # the zero-shot point is often far above the rest: keep both readable
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2f"))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labels")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def _loop_folder(folder: Path) -> pd.DataFrame:
    """The metrics of an ``activevlm loop`` output folder (``seed*/metrics.jsonl``, or one
    run folder), with ``dataset`` (the pool's dataset name) and ``target`` columns."""
    runs = sorted(p.parent for p in folder.glob("*/metrics.jsonl")) or [folder]
    frames = []
    for run in runs:
        df = pd.DataFrame([json.loads(line) for line in
                           (run / "metrics.jsonl").read_text().splitlines() if line])
        loop = json.loads((run / "loop.json").read_text()) if (run / "loop.json").is_file() \
            else {}
        target = ((loop.get("config") or {}).get("select") or {}).get("target_domain")
        split = (loop.get("config") or {}).get("test_split", "test")
        dataset = "loop"
        if (run / "state.json").is_file():
            manifest = Path(json.loads((run / "state.json").read_text())["pool"]) / \
                "manifest.json"
            if manifest.is_file():
                dataset = json.loads(manifest.read_text()).get("dataset", {}).get("name",
                                                                                  dataset)
        frames.append(df.assign(dataset=dataset, target=target or "all",
                                split=split or "all"))
    return pd.concat(frames, ignore_index=True)


def load_results(path: str | Path) -> pd.DataFrame:
    """Results of ``activevlm bench`` (``results.parquet``, or its folder) or ``activevlm loop``
    (its ``--out`` folder with ``seed*/metrics.jsonl``, or one ``metrics.jsonl``)."""
    path = Path(path)
    if path.is_dir() and (path / "results.parquet").is_file():
        path = path / "results.parquet"
    if path.is_file() and path.name == "metrics.jsonl":
        path = path.parent
    try:
        if path.is_dir() and (any(path.glob("*/metrics.jsonl"))
                              or (path / "metrics.jsonl").is_file()):
            return _loop_folder(path)
        if path.is_file() and path.suffix == ".parquet":
            return pd.read_parquet(path)
    except (OSError, ValueError, KeyError) as e:  # pyarrow and json errors are ValueErrors
        raise ValueError(f"{path}: cannot read results: not a results.parquet or a loop's "
                         "metrics.jsonl (damaged, or written by another program)") from e
    if not path.exists():
        raise FileNotFoundError(f"results not found: {path}")
    raise ValueError(f"{path}: not benchmark or loop results; give results.parquet (activevlm "
                     f"bench) or a loop --out folder / metrics.jsonl (activevlm loop)")


def _title(df: pd.DataFrame, dataset: str, target: str) -> str:
    split = df["split"].iloc[0] if "split" in df else "test"
    n = sorted(set(df["n_test"].dropna().astype(int))) if "n_test" in df else []
    n_text = f", n={n[0]}" if len(n) == 1 else (f", n={n[0]}–{n[-1]}" if n else "")
    seeds = df["seed"].nunique()
    return (f"{dataset}, target {target}: {split} split{n_text}; mean ± se over {seeds} "
            f"seed{'s' if seeds != 1 else ''}")


def plot_results(results: str | Path | pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``accuracy_<dataset>_<target>.png``, ``ece_<dataset>_<target>.png`` (one panel
    per predictive: deterministic head and, when recorded, Bayesian) and ``summary.md`` into
    ``out_dir``; ``results`` is a table or anything :func:`load_results` reads. Returns the
    written paths by name."""
    from matplotlib.figure import Figure

    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acc, ece = summary_table(df, "accuracy"), summary_table(df, "ece")
    paths: dict[str, Path] = {}
    md = ["# Benchmark summary", "",
          f"Target test accuracy of the deterministic head, mean ± standard error over seeds "
          f"({df['seed'].nunique()} seeds); columns = number of labels.", ""]
    for (dataset, target), rows in acc.groupby(["dataset", "target"], sort=False):
        name = f"{dataset}_{target}"
        cell = df[(df["dataset"] == dataset) & (df["target"] == target)]
        ece_rows = ece[(ece["dataset"] == dataset) & (ece["target"] == target)]
        for kind, ylabel in (("accuracy", "accuracy"), ("ece", "ECE (log scale)")):
            predictives = {k: v for k, v in PREDICTIVES.items() if f"{v}{kind}" in cell}
            fig = Figure(figsize=(5 * len(predictives), 4))  # no pyplot: backend untouched
            axes = fig.subplots(1, len(predictives), squeeze=False, sharey=True)[0]
            for ax, (predictive, prefix) in zip(axes, predictives.items(), strict=True):
                _curve(ax, summary_table(cell, f"{prefix}{kind}"), ylabel, log=kind == "ece")
                ax.set_title(f"{predictive} predictive", fontsize=10)
            axes[0].legend(fontsize=8)
            fig.suptitle(_title(cell, dataset, target), fontsize=10)
            fig.tight_layout()
            path = out_dir / f"{kind}_{name}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=120)
            paths[f"{kind}_{name}"] = path
        md += [f"## {dataset} / target {target}", "", "Accuracy:", "", _markdown(rows, "acc"), ""]
        if "diff_mean" in rows:
            md += [f"Accuracy minus {BASELINE} (paired by seed):", "",
                   _markdown(rows[rows["strategy"] != BASELINE], "diff"), ""]
        md += ["ECE:", "", _markdown(ece_rows, "acc"), ""]
    paths["summary"] = out_dir / "summary.md"
    atomic_write_text(paths["summary"], "\n".join(md))
    return paths
