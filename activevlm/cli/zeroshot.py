"""``activevlm zeroshot``: zero-shot accuracy and calibration of a pool, with and without the
posterior predictive."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from activevlm.cli.pools import open_pool_or_demo, pool_folder, pool_option

console = Console(soft_wrap=True)


def zeroshot(
    pool: Path | None = pool_option(),
    posterior: Path = typer.Option(None, "--posterior", help="Posterior directory (from "
                                   "`activevlm posterior fit`); adds the Bayesian rows."),
    split: str = typer.Option("test", "--split", help="Items to evaluate ('all' for every "
                              "split)."),
    domain: list[str] = typer.Option(None, "--domain", help="Restrict to these domains "
                                     "(repeatable)."),
    predictive: str = typer.Option("probit", "--predictive", help="probit (ProbCosine "
                                   "moments) or mc (Monte Carlo over joint draws)."),
    variant: str = typer.Option("full", "--variant", help="ProbCosine variance: full or diag."),
    draws: int = typer.Option(64, "--draws", min=1, help="Joint posterior draws K (mc)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Monte Carlo draws."),
    n_bins: int = typer.Option(20, "--bins", min=1, help="Confidence bins for ECE."),
    per_domain: bool = typer.Option(False, "--per-domain", help="Reliability diagram: also "
                                    "one row of panels per domain."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: POOL/zeroshot)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present), cpu, cuda:0."),
) -> None:
    """Evaluate zero-shot classification; write zeroshot.parquet/.csv and reliability.png."""
    from activevlm.bayes.posterior import BayesVLMPosterior
    from activevlm.evaluation import predict_zeroshot, reliability_diagram, summarize
    from activevlm.utils.io import atomic_write_csv, atomic_write_parquet

    p = open_pool_or_demo(pool)
    out = out or pool_folder(p, "zeroshot")
    post = None if posterior is None else BayesVLMPosterior.load(posterior)
    preds = predict_zeroshot(
        p, post, domain=domain or None, split=None if split == "all" else split,
        predictive=predictive, variant=variant, mc_samples=draws, seed=seed,
        device=device,
    )
    table = summarize(preds, n_bins)
    atomic_write_parquet(out / "zeroshot.parquet", table)
    atomic_write_csv(out / "zeroshot.csv", table)
    dataset = p.manifest.get("dataset", {}).get("name", p.path.name)
    bayes = (f"Bayesian: {predictive}" + (f", {draws} draws, seed {seed}"
                                          if predictive == "mc" else f" ({variant})"))
    png = reliability_diagram(
        preds.probs, preds.labels, out / "reliability.png", n_bins,
        title=f"{dataset} ({p.model_id.split('@')[0]}), split {split}, n={len(preds.labels)}; "
              f"{bayes}", groups=preds.domains if per_domain else None)

    view = Table(title=f"zero-shot on {p.path.name} ({len(preds.class_ids)} classes)")
    for col in table.columns:
        view.add_column(col, justify="left" if col in ("model", "domain") else "right")
    for row in table.itertuples(index=False):
        view.add_row(row.model, str(row.domain), str(row.n), f"{row.accuracy:.4f}",
                     f"{row.nll:.4f}", f"{row.ece:.4f}", f"{row.brier:.4f}")
    console.print(view)
    console.print(f"[green]wrote {out / 'zeroshot.parquet'}, {out / 'zeroshot.csv'}, {png}[/]")
