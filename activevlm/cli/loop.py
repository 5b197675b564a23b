"""``activevlm loop``: a simulated-oracle active-learning loop (labels from the dataset)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {text!r}") from e


def loop(
    pool: Path | None = typer.Option(None, "--pool", help="Pool directory (default: demo)."),
    strategy: str = typer.Option("epig", "--strategy", help="random, entropy, bayes-entropy, "
                                 "margin, bald, epig, vilu or vilu+epig; append -targeted for "
                                 "targeted selection."),
    rounds: int = typer.Option(5, "--rounds"),
    budget: int = typer.Option(50, "--budget", help="Labels per round."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, one run each."),
    target: str | None = typer.Option(None, "--target", help="Target domain (demo: clipart)."),
    out: Path = typer.Option(Path("runs/loop"), "--out", help="Output folder (seed<k>/ each)."),
    refit: str = typer.Option("recentre+update", "--refit",
                              help="none, recentre or recentre+update."),
    draws: int = typer.Option(100, "--draws", help="Joint posterior draws K."),
    n_targets: int = typer.Option(256, "--n-targets", help="EPIG target points M."),
    epochs: int = typer.Option(50, "--epochs", help="Fine-tuning epochs (maximum)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run (or resume) a simulated active-learning loop per seed; prints accuracy per round."""
    from activevlm.bench.grid import resolve_pool
    from activevlm.loop import LoopConfig, run_loop

    try:
        pool_obj, fit_domains, default_target = resolve_pool(
            "demo" if pool is None else str(pool), progress=progress)
        config = LoopConfig.from_dict({
            "strategy": strategy, "rounds": rounds, "budget": budget,
            "target_domain": default_target if target is None else target,
            "posterior_domains": fit_domains,
            "select": {"n_draws": draws, "n_targets": n_targets},
            "finetune": {"max_epochs": epochs}, "refit": {"mode": refit},
        })
        tables = []
        for seed in parse_seeds(seeds):
            console.print(f"[bold]seed {seed}[/] -> {out / f'seed{seed}'}")
            tables.append(run_loop(pool_obj, config, out / f"seed{seed}", seed,
                                   progress=progress, log=console.print))
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    import pandas as pd

    df = pd.concat(tables)
    summary = df.groupby("n_labels")[["accuracy", "nll", "ece", "bayes_accuracy"]].mean()
    console.print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
