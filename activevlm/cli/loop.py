"""``activevlm loop``: a simulated-oracle active-learning loop (labels from the dataset)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from activevlm.acquisition.options import STRATEGIES
from activevlm.loop.config import LoopConfig

console = Console()
_LOOP = LoopConfig()


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"--seeds must be comma-separated integers, got {text!r}") from e
    if not seeds:
        raise typer.BadParameter("--seeds is empty")
    return seeds


def loop(
    pool: Path | None = typer.Option(None, "--pool", help="Pool directory (default: demo)."),
    strategy: str = typer.Option(
        _LOOP.select.strategy, "--strategy", help=f"One of {', '.join(STRATEGIES)}; -targeted "
        "or -untargeted may be appended (default: targeted when there is a target, as in "
        "`select`)."),
    rounds: int = typer.Option(_LOOP.rounds, "--rounds", help="Selection rounds."),
    budget: int = typer.Option(_LOOP.select.budget, "--budget", help="Labels per round."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, one run each."),
    target: str | None = typer.Option(None, "--target", help="Target domain (demo: clipart)."),
    run: Path = typer.Option(Path("runs/loop"), "--run",
                             help="Run directory; each seed runs in RUN/seed<k>."),
    refit: str = typer.Option(_LOOP.refit.mode, "--refit",
                              help="Posterior refit: none, recentre or recentre+update."),
    draws: int = typer.Option(_LOOP.select.n_draws, "--draws", help="Joint posterior draws K."),
    n_targets: int = typer.Option(_LOOP.select.n_targets, "--n-targets",
                                  help="Target points M (EPIG, targeting)."),
    epochs: int = typer.Option(_LOOP.finetune.max_epochs, "--epochs",
                               help="Fine-tuning epochs (maximum)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run (or resume) a simulated active-learning loop per seed; prints accuracy per round."""
    import pandas as pd

    from activevlm.bench.grid import resolve_pool
    from activevlm.loop import run_loop

    seed_list = parse_seeds(seeds)
    pool_obj, fit_domains, default_target = resolve_pool(
        "demo" if pool is None else str(pool), progress=progress)
    config = LoopConfig.from_dict({
        "rounds": rounds, "posterior_domains": fit_domains,
        "select": {"strategy": strategy, "budget": budget, "n_draws": draws,
                   "n_targets": n_targets,
                   "target_domain": default_target if target is None else target},
        "finetune": {"max_epochs": epochs}, "refit": {"mode": refit},
    })
    tables = []
    for seed in seed_list:
        console.print(f"[bold]seed {seed}[/] -> {run / f'seed{seed}'}")
        tables.append(run_loop(pool_obj, config, run / f"seed{seed}", seed,
                               progress=progress, log=console.print))
    df = pd.concat(tables)
    summary = df.groupby("n_labels")[["accuracy", "nll", "ece", "bayes_accuracy"]].mean()
    console.print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
