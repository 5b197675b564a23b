"""Tables for benchmarks/selection/PROTOCOL.md from one or more ``results.parquet``.

    python benchmarks/selection/analyze.py --world demo-current RESULTS... \
        --world pacs-current RESULTS... \
        --out benchmarks/selection/RESULTS.md --plot benchmarks/selection/differences.png

Per world (a world × setting of the protocol; results of several runs are concatenated;
cells are (target, strategy, seed)): accuracy mean ± se over seeds per budget, paired
differences (same seed and target) to each baseline, the round diagnostics, the posterior's
calibration against the head's, and the decision of the protocol's rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

BASELINES = ("random-untargeted", "random-targeted", "margin-targeted")
DIAGNOSTICS = ("target_share", "n_classes_new", "batch_similarity")
CANDIDATES = ("auto-targeted", "auto-balanced-targeted")
"""The strategies the protocol's rule may make the default."""


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


def calibration_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per strategy and budget: posterior minus head ECE and NLL (paired per cell, mean; > 0
    means the posterior is worse), the chosen temperature τ (median) and c·v (median)."""
    rounds = df[df["n_labels"] > 0].assign(d_ece=lambda d: d["bayes_ece"] - d["ece"],
                                           d_nll=lambda d: d["bayes_nll"] - d["nll"])
    g = rounds.groupby(["strategy", "n_labels"])
    t = pd.DataFrame({"ECE post − head": g["d_ece"].mean().map(lambda v: f"{v:+.3f}"),
                      "NLL post − head": g["d_nll"].mean().map(lambda v: f"{v:+.3f}")})
    for col, name in (("calibration_tau", "τ"), ("cv_median", "c·v")):
        if col in rounds:
            t[name] = g[col].median().map(lambda v: f"{v:.2g}")
    return t


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
        if "bayes_ece" in df:
            lines += [f"### {world}: the posterior's calibration against the head's (target "
                      "test split; τ: the temperature cross-fitting chose)", "",
                      markdown(calibration_table(df)), ""]
    lines += ["## Decision (PROTOCOL.md)", "", *decision(raws)]
    return "\n".join(lines) + "\n"


def decision(raws: dict[str, dict[str, pd.DataFrame]]) -> list[str]:
    """The protocol's rule over :data:`CANDIDATES` and goals G1–G3 per world: (G1) mean
    paired difference to random-targeted >= 0 at every budget, (G2) >= +0.02 averaged over
    budgets, (G3) >= margin-targeted averaged over budgets."""
    lines = []
    rows = []
    for s in [c for c in CANDIDATES if all(c in r["random-targeted"].index
                                           for r in raws.values())]:
        goals = []
        for w, r in raws.items():
            rt, mt = r["random-targeted"].loc[s], r["margin-targeted"].loc[s]
            worst = float(rt.drop("average").min())
            goals.append({"strategy": s, "world": w, "worst budget vs random-targeted":
                          f"{worst:+.3f}", "G1": worst >= 0,
                          "average vs random-targeted": f"{rt['average']:+.3f}",
                          "G2": rt["average"] >= 0.02,
                          "average vs margin-targeted": f"{mt['average']:+.3f}",
                          "G3": mt["average"] >= 0})
        table = pd.DataFrame(goals)
        rows.append((s, bool(table["G1"].all()),
                     float(np.mean([r["random-targeted"].loc[s, "average"]
                                    for r in raws.values()])),
                     float(np.mean([r["margin-targeted"].loc[s, "average"]
                                    for r in raws.values()]))))
        lines += [f"Goals of `{s}` per world:", "", markdown(table.set_index("strategy")), ""]
    summary = pd.DataFrame(rows, columns=["strategy", "G1 everywhere",
                                          "mean vs random-targeted", "mean vs margin-targeted"])
    summary = summary.sort_values("mean vs random-targeted", ascending=False)
    qualified = summary[summary["G1 everywhere"]]
    if len(qualified):
        verdict = f"Default by the rule: **{qualified.iloc[0]['strategy']}** (G1 everywhere)."
    elif len(summary) and summary.iloc[0]["mean vs random-targeted"] > 0 and \
            summary.iloc[0]["mean vs margin-targeted"] >= 0:
        verdict = (f"No candidate meets G1 everywhere; by the fallback rule the default is "
                   f"**{summary.iloc[0]['strategy']}** (positive mean difference to "
                   "random-targeted, not below margin-targeted).")
    else:
        verdict = "No candidate qualifies: the default stays `random` (targeted)."
    for col in ("mean vs random-targeted", "mean vs margin-targeted"):
        summary[col] = summary[col].map(lambda v: f"{v:+.3f}")
    return [*lines, markdown(summary.set_index("strategy")), "", verdict]


def plot_differences(worlds: dict[str, pd.DataFrame], out: Path,
                     baseline: str = "random-targeted") -> Path:
    """One panel per world: accuracy minus ``baseline`` (paired) vs labels, mean ± se, one
    line per strategy (colour and line style distinct for up to 20 strategies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(worlds))
    n_rows = -(-len(worlds) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(6.0 * cols, 5.2 * n_rows + 1.2),
                             squeeze=False)
    for ax in axes.flat[len(worlds):]:
        ax.axis("off")
    cmap = plt.get_cmap("tab20")
    for ax, (world, df) in zip(axes.flat, worlds.items(), strict=False):
        p = paired(df[df["n_labels"] > 0], baseline)
        seeds = df["seed"].nunique()
        targets = ", ".join(sorted(df["target"].unique()))
        for i, (strategy, rows) in enumerate(p.groupby("strategy")):
            g = rows.groupby("n_labels")["diff"]
            mean, se = g.mean(), g.apply(_se)
            style = "--" if strategy.endswith("untargeted") else "-"
            ax.errorbar(mean.index * (1 + (i - 7) * 0.012), mean, yerr=se, label=strategy,
                        color=cmap(i % 20), linestyle=style, marker="o", ms=3, capsize=2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=f"{world}, targets {targets}: test split, {seeds} seeds",
               xlabel="labels", ylabel=f"accuracy − {baseline} (paired)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=5)
    fig.suptitle(f"Accuracy minus {baseline}, mean ± se over seeds (and targets); "
                 "dashed: untargeted")
    fig.tight_layout(rect=(0, 0.08 / n_rows, 1, 1))
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
