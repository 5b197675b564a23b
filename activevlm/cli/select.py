"""``activevlm select``: fill a labelling queue (the demo world when no pool is given)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def select(
    budget: int = typer.Option(500, "--budget", help="Number of items to queue."),
    pool: Path | None = typer.Option(None, "--pool", help="Pool directory (default: demo)."),
    posterior: Path | None = typer.Option(
        None, "--posterior", help="Posterior directory; fitted on the fly (and cached in the "
        "run) when omitted."),
    strategy: str = typer.Option("epig", "--strategy", help="random, entropy, bayes-entropy, "
                                 "margin, bald, epig or vilu."),
    target: str | None = typer.Option(
        None, "--target", help="Target DOMAIN of the pool, or a target POOL directory."),
    target_split: str | None = typer.Option("val", "--target-split",
                                            help="Split of the target domain ('all' = any)."),
    pool_split: str | None = typer.Option("train", "--pool-split",
                                          help="Split that may be queued ('all' = any)."),
    targeted: bool | None = typer.Option(
        None, "--targeted/--untargeted", help="Score the target points and queue their nearest "
        "pool neighbours (BayesVLM protocol), or score the pool itself. Default: targeted "
        "when there is a target, unless --knn-prefilter, --batch diverse, --class-balanced "
        "or --dedup is given."),
    run: Path | None = typer.Option(None, "--run", help="Run directory (default: "
                                    "runs/<pool name>)."),
    seed: int = typer.Option(0, "--seed"),
    draws: int = typer.Option(100, "--draws", help="Joint posterior draws K."),
    n_targets: int = typer.Option(256, "--n-targets", help="EPIG target points M."),
    batch: str = typer.Option("topk", "--batch", help="topk, stochastic or diverse."),
    beta: float = typer.Option(1.0, "--beta", help="Stochastic batch temperature."),
    mode: str = typer.Option("power", "--mode", help="Stochastic: power or softmax."),
    class_balanced: bool = typer.Option(False, "--class-balanced"),
    dedup: float | None = typer.Option(None, "--dedup", help="Drop near-duplicates above this "
                                       "cosine similarity."),
    epig_top_classes: int | None = typer.Option(
        None, "--epig-top-classes", help="EPIG over each input's top classes + 'other' "
        "(a lower bound; much faster for many classes)."),
    knn_prefilter: int | None = typer.Option(
        None, "--knn-prefilter", help="Score only the K nearest pool neighbours of the target "
        "points."),
    vilu_model: Path | None = typer.Option(None, "--vilu-model",
                                           help="Trained ViLU model (strategy vilu)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score the unlabelled pool and write the next labelling queue into the run directory."""
    from activevlm.runs.select import SelectConfig
    from activevlm.runs.session import run_select

    config = SelectConfig(
        budget=budget, strategy=strategy, target_split=None if target_split == "all"
        else target_split, targeted=targeted, pool_split=None if pool_split == "all"
        else pool_split, n_draws=draws, n_targets=n_targets, batch=batch, beta=beta,
        mode=mode, class_balanced=class_balanced, dedup_similarity=dedup, seed=seed,
        epig_top_classes=epig_top_classes, knn_prefilter=knn_prefilter,
    )
    try:
        result, state = run_select(config, pool=pool, posterior=posterior, target=target,
                                   run=run, vilu_model=vilu_model, progress=progress,
                                   log=console.print)
    except (ValueError, FileNotFoundError, KeyError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    q = result.queue
    console.print(f"round {result.round}: queued {len(q)} items "
                  f"({config.strategy}, seed {config.seed}) in {state.path}")
    for kind, path in result.paths.items():
        console.print(f"  {kind:12s} {path}")
    console.print(f"next: label them, then `activevlm labels import FILE --run {state.path}`")
