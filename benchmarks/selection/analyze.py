"""Tables for benchmarks/selection/PROTOCOL.md from one or more ``results.parquet``.

    python benchmarks/selection/analyze.py --world demo RESULTS... --world pacs RESULTS... \
        --out benchmarks/selection/RESULTS.md --plot benchmarks/selection/differences.png

Per world (results of several runs are concatenated; cells are (target, strategy, seed)):
accuracy mean ± se over seeds per budget, paired differences (same seed and target) to each
baseline, the round diagnostics, and the decision of the protocol's rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

BASELINES = ("random-untargeted", "random-targeted", "entropy-targeted")
DIAGNOSTICS = ("target_share", "n_classes_new", "batch_similarity")


def _se(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _cell(mean: float, se: float, signed: bool = False) -> str:
    m = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return m if np.isnan(se) else f"{m} ± {se:.3f}"


def load(paths: list[str]) -> pd.DataFrame:
    """Rows of every results file; a repeated (target, strategy, seed, round) keeps the last."""
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    return df.drop_duplicates(["target", "strategy", "seed", "round"], keep="last")


def paired(df: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """``diff`` = accuracy(strategy) − accuracy(baseline), same target, seed and budget."""
    base = df[df["strategy"] == baseline][["target", "seed", "n_labels", "accuracy"]]
    out = df.merge(base, on=["target", "seed", "n_labels"], suffixes=("", "_base"))
    return out.assign(diff=out["accuracy"] - out["accuracy_base"])


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Strategies x budgets, mean ± se over (target, seed) cells (targets pooled)."""
    labelled = df[df["n_labels"] > 0]
    g = labelled.groupby(["strategy", "n_labels"])["accuracy"]
    t = pd.DataFrame({"mean": g.mean(), "se": g.apply(_se)}).reset_index()
    t["cell"] = [_cell(m, s) for m, s in zip(t["mean"], t["se"], strict=True)]
    return t.pivot(index="strategy", columns="n_labels", values="cell")


def diff_table(df: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(formatted table, raw mean differences per strategy and budget + their average)."""
    p = paired(df[df["n_labels"] > 0], baseline)
    g = p.groupby(["strategy", "n_labels"])["diff"]
    t = pd.DataFrame({"mean": g.mean(), "se": g.apply(_se)}).reset_index()
    t["cell"] = [_cell(m, s, True) for m, s in zip(t["mean"], t["se"], strict=True)]
    shown = t.pivot(index="strategy", columns="n_labels", values="cell")
    raw = t.pivot(index="strategy", columns="n_labels", values="mean")
    per_seed = p.groupby(["strategy", "target", "seed"])["diff"].mean()
    avg = per_seed.groupby("strategy").agg(["mean", _se])
    shown["average"] = [_cell(avg.loc[s, "mean"], avg.loc[s, "_se"], True) for s in shown.index]
    raw["average"] = avg["mean"]
    return shown, raw


def diagnostics_table(df: pd.DataFrame) -> pd.DataFrame:
    """Round-1 and all-round means of the batch diagnostics per strategy."""
    rounds = df[df["round"] > 0]
    cols = [c for c in DIAGNOSTICS if c in rounds]
    first = rounds[rounds["round"] == 1].groupby("strategy")[cols].mean().add_suffix(" (r1)")
    every = rounds.groupby("strategy")[cols].mean().add_suffix(" (all)")
    return first.join(every).round(3)


def markdown(table: pd.DataFrame) -> str:
    table = table.reset_index()
    head = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([head, rule, *rows])


def report(worlds: dict[str, pd.DataFrame]) -> str:
    lines: list[str] = [
        "# Which strategy should `select` default to? — results", "",
        "Made by `benchmarks/selection/analyze.py` (commands: benchmarks/README.md) under the "
        "protocol of PROTOCOL.md. Accuracy is on each target's test split; ± is the standard "
        "error over seeds (and targets); differences are paired by target and seed.", ""]
    raws: dict[str, dict[str, pd.DataFrame]] = {}
    for world, df in worlds.items():
        seeds = sorted(int(s) for s in df["seed"].unique())
        targets = sorted(df["target"].unique())
        lines += [f"## {world}: targets {', '.join(targets)}; seeds {seeds} "
                  f"({len(seeds)}); target test accuracy", "", markdown(accuracy_table(df)), ""]
        raws[world] = {}
        for baseline in BASELINES:
            shown, raw = diff_table(df, baseline)
            raws[world][baseline] = raw
            lines += [f"### {world}: accuracy minus {baseline} (paired by target and seed; "
                      "average = mean over budgets)", "", markdown(shown), ""]
        lines += [f"### {world}: what the batches held (r1 = first round)", "",
                  markdown(diagnostics_table(df)), ""]
    lines += ["## Decision (PROTOCOL.md)", "", *decision(raws)]
    return "\n".join(lines) + "\n"


def decision(raws: dict[str, dict[str, pd.DataFrame]]) -> list[str]:
    """The protocol's rule: among strategies never below random-targeted (mean paired
    difference >= 0 at every budget on every world), the best average over worlds."""
    vs_rt = {w: r["random-targeted"] for w, r in raws.items()}
    strategies = sorted(set.intersection(*(set(t.index) for t in vs_rt.values())))
    rows = []
    for s in strategies:
        budgets_ok = all((t.loc[s].drop("average") >= 0).all() for t in vs_rt.values())
        avg = float(np.mean([t.loc[s, "average"] for t in vs_rt.values()]))
        goal = all(t.loc[s, "average"] >= 0.02 for t in vs_rt.values()) and budgets_ok and all(
            raws[w]["entropy-targeted"].loc[s, "average"] >= 0 for w in raws)
        rows.append((s, budgets_ok, avg, goal))
    table = pd.DataFrame(rows, columns=["strategy", "never below random-targeted",
                                        "mean diff to random-targeted", "issue goal met"])
    table = table.sort_values("mean diff to random-targeted", ascending=False)
    qualified = table[table["never below random-targeted"]]
    verdict = (f"Default by the rule: **{qualified.iloc[0]['strategy']}**." if len(qualified)
               else "No strategy qualifies: the default stays as it is.")
    table["mean diff to random-targeted"] = table["mean diff to random-targeted"].map(
        lambda v: f"{v:+.3f}")
    return [markdown(table.set_index("strategy")), "", verdict]


def plot_differences(worlds: dict[str, pd.DataFrame], out: Path,
                     baseline: str = "random-targeted") -> Path:
    """One panel per world: accuracy minus ``baseline`` (paired) vs labels, mean ± se, one
    line per strategy (colour and line style distinct for up to 20 strategies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(worlds), figsize=(6.5 * len(worlds), 6.2), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (world, df) in zip(axes[0], worlds.items(), strict=True):
        p = paired(df[df["n_labels"] > 0], baseline)
        seeds = df["seed"].nunique()
        targets = ", ".join(sorted(df["target"].unique()))
        for i, (strategy, rows) in enumerate(p.groupby("strategy")):
            g = rows.groupby("n_labels")["diff"]
            mean, se = g.mean(), g.apply(_se)
            style = "--" if strategy.endswith("untargeted") else "-"
            ax.errorbar(mean.index + (i - 7) * 0.4, mean, yerr=se, label=strategy,
                        color=cmap(i % 20), linestyle=style, marker="o", ms=3, capsize=2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=f"{world}, targets {targets}: test split, {seeds} seeds",
               xlabel="labels", ylabel=f"accuracy − {baseline} (paired)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=5)
    fig.suptitle(f"Accuracy minus {baseline}, mean ± se over seeds (and targets); "
                 "dashed: untargeted")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", nargs="+", action="append", required=True,
                        metavar=("NAME", "RESULTS"), help="a world's name and results files")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown report")
    parser.add_argument("--plot", type=Path, help="a PNG of the differences to random-targeted")
    args = parser.parse_args(argv)
    worlds = {name: load(files) for name, *files in args.world}
    text = report(worlds)
    args.out.write_text(text)
    if args.plot is not None:
        plot_differences(worlds, args.plot)
    print(text)


if __name__ == "__main__":
    main()
