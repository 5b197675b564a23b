"""``activevlm select``: fill a labelling queue (the demo world when no pool is given)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from activevlm.acquisition.options import STRATEGIES, BatchOptions, BatchRule, Weighting
from activevlm.runs.config import SelectConfig

console = Console()


_SELECT = SelectConfig()
_BATCH = BatchOptions()


def describe_round(result, state, target: str | None) -> None:
    """The target, the neighbourhood chosen among and the phase of a regime-aware strategy."""
    if result.neighbourhood is not None:
        share = result.neighbourhood / max(result.candidates, 1)
        console.print(f"target {target}: chose among the {result.neighbourhood} pool items "
                      f"nearest to it ({share:.0%} of the {result.candidates} candidates)")
        if result.nearly_untargeted:
            console.print("[yellow]warning:[/] the neighbourhood holds most of the pool, so "
                          "this round is nearly untargeted; lower --neighbourhood or --budget,"
                          " or use a larger pool")
    if result.phase is not None:
        spec = result.strategy.spec
        n = len(state.excluded()) - len(result.queue)
        part = spec.early if result.phase == "coverage" else spec.late
        console.print(f"phase: {result.phase} ({n} items labelled, queued or skipped before,"
                      f" switch at {spec.switch_per_class:g} per class x "
                      f"{len(state.classnames)} classes): {part}")


def select(
    budget: int = typer.Option(_SELECT.budget, "--budget", help="Number of items to queue."),
    pool: Path | None = typer.Option(None, "--pool", help="Pool directory (default: demo)."),
    posterior: Path | None = typer.Option(
        None, "--posterior", help="Posterior directory; fitted on the fly (and cached in the "
        "run) when omitted."),
    strategy: str = typer.Option(
        _SELECT.strategy, "--strategy", help=f"One of {', '.join(STRATEGIES)}; -targeted or "
        "-untargeted may be appended (same as --targeted/--untargeted)."),
    target: str | None = typer.Option(
        None, "--target", help="Target DOMAIN of the pool, or a target POOL directory."),
    target_split: str | None = typer.Option(_SELECT.target_split, "--target-split",
                                            help="Split of the target domain ('all' = any)."),
    pool_split: str | None = typer.Option(_SELECT.pool_split, "--pool-split",
                                          help="Split that may be queued ('all' = any)."),
    targeted: bool | None = typer.Option(
        _SELECT.targeted, "--targeted/--untargeted", help="Choose among the pool items nearest "
        "to the target points, or among the whole pool. Default: targeted when there is a "
        "target."),
    run: Path | None = typer.Option(None, "--run", help="Run directory (default: "
                                    "runs/<pool name>)."),
    seed: int = typer.Option(_SELECT.seed, "--seed", help="Seed of the selection."),
    draws: int = typer.Option(_SELECT.n_draws, "--draws", help="Joint posterior draws K."),
    n_targets: int = typer.Option(_SELECT.n_targets, "--n-targets",
                                  help="Target points M (EPIG, targeting)."),
    batch: str = typer.Option(_BATCH.rule.value, "--batch", help=", ".join(BatchRule) + "."),
    beta: float = typer.Option(_BATCH.beta, "--beta", help="Stochastic batch temperature."),
    weighting: str = typer.Option(_BATCH.weighting.value, "--weighting",
                                  help="Stochastic batch weights: " + " or ".join(Weighting)
                                  + "."),
    class_balanced: bool = typer.Option(_BATCH.class_balanced, "--class-balanced",
                                        help="Round-robin over predicted classes."),
    dedup: float | None = typer.Option(_BATCH.dedup_similarity, "--dedup",
                                       help="Drop near-duplicates above this cosine "
                                       "similarity (-1..1)."),
    pseudo_samples: int = typer.Option(_BATCH.pseudo_samples, "--pseudo-samples",
                                       help="--batch pseudo-label: labels sampled per pick "
                                       "(branches)."),
    epig_top_classes: int | None = typer.Option(
        _SELECT.epig_top_classes, "--epig-top-classes", help="EPIG over each input's top "
        "classes + 'other' (a lower bound; much faster for many classes)."),
    neighbourhood: float = typer.Option(
        _SELECT.neighbourhood, "--neighbourhood", help="Targeted: score this many times the "
        "budget of pool items nearest to the target points."),
    vilu_model: Path | None = typer.Option(None, "--vilu-model",
                                           help="Trained ViLU model (strategies vilu, "
                                           "vilu+epig)."),
    labelstudio_root: Path | None = typer.Option(
        None, "--labelstudio-root", help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        "; task image URLs are relative to it (default: the folder above the pool's images)."),
    predictions: bool = typer.Option(
        True, "--predictions/--no-predictions", help="Attach the model's guess to each Label "
        "Studio task as a pre-annotation."),
    force: bool = typer.Option(False, "--force", help="Queue a new round even though earlier "
                               "queued items still await labels."),
    ray: bool = typer.Option(_SELECT.ray, "--ray", help="Untargeted: score the pool on Ray "
                             "(a local Ray unless --ray-address); same scores and queue."),
    ray_address: str | None = typer.Option(
        _SELECT.ray_address, "--ray-address", help="Score on the Ray cluster at HOST:PORT "
        "(or 'auto'); implies --ray."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score the unlabelled pool and write the next labelling queue into the run directory."""
    from activevlm.pool import open_pool
    from activevlm.runs.queue import LabelStudioOptions, pool_image_root
    from activevlm.runs.session import DEMO_TARGET_DOMAIN, run_select
    from activevlm.utils.ray_cluster import connect

    config = SelectConfig(
        budget=budget, strategy=strategy,
        target_split=None if target_split == "all" else target_split, targeted=targeted,
        pool_split=None if pool_split == "all" else pool_split, n_draws=draws,
        n_targets=n_targets, seed=seed, epig_top_classes=epig_top_classes,
        neighbourhood=neighbourhood, ray=ray, ray_address=ray_address,
        batch=BatchOptions(rule=batch, beta=beta, weighting=weighting,
                           class_balanced=class_balanced, dedup_similarity=dedup,
                           pseudo_samples=pseudo_samples))
    config.resolve(has_target=True)  # contradicting options fail before any work
    if config.uses_ray:
        _, targeted_now = config.resolve(has_target=target is not None)
        if targeted_now:
            console.print("[yellow]note:[/] --ray scores untargeted selection only; this "
                          "targeted round scores its few candidates here")
        else:  # a missing package or a silent address fails before any work
            connect(config.ray_address, progress=progress)
    result, state = run_select(config, pool=pool, posterior=posterior, target=target,
                               run=run, vilu_model=vilu_model, progress=progress,
                               labelstudio=LabelStudioOptions(labelstudio_root, predictions),
                               allow_pending=force, log=console.print)
    q = result.queue
    console.print(f"round {result.round}: queued {len(q)} items "
                  f"({result.strategy.label}, seed {config.seed}) in {state.path}")
    describe_round(result, state, target or (DEMO_TARGET_DOMAIN if pool is None else None))
    if len(q) < budget:
        console.print(f"[yellow]note:[/] --budget {budget} but only {len(q)} unlabelled, "
                      f"unqueued items were left in the pool split; all of them were queued")
    for kind, path in result.paths.items():
        console.print(f"  {kind:18s} {path}")
    images = pool_image_root(open_pool(state.pool))
    root = labelstudio_root or images.parent
    console.print(f"Label Studio: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}, a Local Storage "
                  f"with path {images}; see the README")
    console.print(f"next: label them, then `activevlm labels import FILE --run {state.path}`")
