"""Curves and a summary table from a benchmark's ``results.parquet``.

Accuracy (and ECE) versus the number of labels, mean ± standard error over seeds, one line
per strategy and one figure per (dataset, target); ``summary.md``: mean ± se per strategy at
each budget and the paired (same seed) difference to ``random-untargeted``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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


def _curve(ax, table: pd.DataFrame, ylabel: str) -> None:
    for strategy, rows in table.groupby("strategy", sort=False):
        rows = rows.sort_values("n_labels")
        x, m = rows["n_labels"].to_numpy(), rows["mean"].to_numpy()
        se = np.nan_to_num(rows["se"].to_numpy())
        (line,) = ax.plot(x, m, marker="o", ms=3, label=strategy)
        ax.fill_between(x, m - se, m + se, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("labels")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_results(results: str | Path | pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``accuracy_<dataset>_<target>.png``, ``ece_<dataset>_<target>.png`` and
    ``summary.md`` into ``out_dir``; returns the written paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = results if isinstance(results, pd.DataFrame) else pd.read_parquet(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acc, ece = summary_table(df, "accuracy"), summary_table(df, "ece")
    paths: dict[str, Path] = {}
    md = ["# Benchmark summary", "",
          f"Target test accuracy, mean ± standard error over seeds "
          f"({df['seed'].nunique()} seeds); columns = number of labels.", ""]
    for (dataset, target), rows in acc.groupby(["dataset", "target"], sort=False):
        name = f"{dataset}_{target}"
        ece_rows = ece[(ece["dataset"] == dataset) & (ece["target"] == target)]
        for kind, table, ylabel in (("accuracy", rows, "target test accuracy"),
                                    ("ece", ece_rows, "target test ECE")):
            fig, ax = plt.subplots(figsize=(6, 4))
            _curve(ax, table, ylabel)
            ax.set_title(f"{dataset} / {target}: {ylabel} (mean ± se)")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"{kind}_{name}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=120)
            plt.close(fig)
            paths[f"{kind}_{name}"] = path
        md += [f"## {dataset} / target {target}", "", "Accuracy:", "", _markdown(rows, "acc"), ""]
        if "diff_mean" in rows:
            md += [f"Accuracy minus {BASELINE} (paired by seed):", "",
                   _markdown(rows[rows["strategy"] != BASELINE], "diff"), ""]
        md += ["ECE:", "", _markdown(ece_rows, "acc"), ""]
    paths["summary"] = out_dir / "summary.md"
    atomic_write_text(paths["summary"], "\n".join(md))
    return paths
