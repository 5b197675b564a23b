"""``activevlm finetune --run DIR``: fine-tune the run's head on its labels, refit its posterior."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from activevlm.cli.pools import DEFAULT_RUN, RUN_OPTION_HELP

console = Console()


def finetune(
    run: Path = typer.Option(DEFAULT_RUN, "--run", help=RUN_OPTION_HELP),
    pool_dir: Path | None = typer.Option(
        None, "--pool", help="The run's pool at a new location (re-points the run; checked by "
        "model id and sample ids)."),
    refit: str = typer.Option("recentre+update", "--refit",
                              help="Posterior refit: none, recentre or recentre+update."),
    val_domain: str | None = typer.Option(
        None, "--val-domain", help="Validate on the pool's labelled items of this domain "
        "(with --val-split); default: hold out a fraction of the run's labels."),
    val_split: str | None = typer.Option(None, "--val-split",
                                         help="Split of the validation items (e.g. val)."),
    posterior: Path | None = typer.Option(
        None, "--posterior", help="Base posterior folder, if the run has none yet (default: "
        "fitted on the pool's train split)."),
    epochs: int = typer.Option(50, "--epochs", help="Maximum epochs."),
    lr: float = typer.Option(1e-3, "--lr"),
    l2_to_init: float = typer.Option(1.0, "--l2-to-init",
                                     help="Relative pull towards the pre-trained weights."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune the pool's head on all labels of the run; the next `select` uses it."""
    from activevlm.finetune import FinetuneConfig, RefitConfig
    from activevlm.runs import RunState, adapt_run, base_posterior, default_fit_domains
    from activevlm.runs.errors import RunError
    from activevlm.runs.lock import run_lock
    from activevlm.runs.pool_link import open_run_pool

    config = FinetuneConfig(max_epochs=epochs, lr=lr, l2_to_init=l2_to_init, seed=seed,
                            device=device)
    refit_config = RefitConfig(mode=refit, device=device)
    state = RunState.load(run)
    if not state.labels:  # before anything is fitted or written
        raise RunError(f"run {run} has no labels yet: import some with `activevlm labels "
                       "import FILE --run RUN` before fine-tuning")
    pool = open_run_pool(state, pool_dir)
    val_rows = None
    if val_domain is not None or val_split is not None:
        val_rows = pool.indices(domain=val_domain, split=val_split, labelled=True)
        if len(val_rows) == 0:
            raise ValueError(f"pool {pool.path}: no labelled items with domain="
                             f"{val_domain!r}, split={val_split!r}")
    with run_lock(run):  # one writer per run from the base posterior to the refit
        base = base_posterior(state.dir, pool, posterior, fit_domains=default_fit_domains(pool),
                              progress=progress, log=console.print)
        result = adapt_run(pool, state, finetune=config, refit_config=refit_config, base=base,
                           val_rows=val_rows, progress=progress)
    h = result.finetune.history
    best = h[h["epoch"] == result.finetune.best_epoch].iloc[0]
    console.print(f"fine-tuned on {result.n_labels} labels: best epoch {result.finetune.best_epoch}"
                  f" (val loss {best['val_loss']:.4f}, val acc {best['val_acc']:.4f}) in "
                  f"{result.seconds:.1f} s; refit {refit}")
    console.print(f"  head       {run / 'head.json'}\n  posterior  {run / 'posterior'}")
    console.print(f"next: `activevlm select --run {run} ...` scores with the fine-tuned model")
