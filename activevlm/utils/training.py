"""The epoch loop with early stopping shared by fine-tuning (``finetune_head``) and ViLU
(``fit_vilu``): the caller trains and scores one epoch, this loop keeps the best weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

State = TypeVar("State")
Key = Any
"""A validation score where lower is better, compared with ``<`` (a float or a tuple, e.g.
``(loss, -accuracy)`` to break ties by accuracy)."""


@dataclass
class EarlyStopping(Generic[State]):
    """How to keep and restore the best weights: ``snapshot()`` copies the trained state,
    ``restore(state)`` puts a copy back; ``patience`` epochs without a strictly better key
    stop training."""

    snapshot: Callable[[], State]
    restore: Callable[[State], None]
    patience: int


@dataclass
class TrainingRun:
    """``history``: one record per epoch (the start first when it was scored);
    ``best_epoch``: the epoch whose weights the model holds (0 = the start); ``best_key``:
    its validation key (None without validation)."""

    best_epoch: int = 0
    best_key: Key = None
    history: list[dict] = field(default_factory=list)


def train_epochs(
    run_epoch: Callable[[int], tuple[Key, dict]],
    max_epochs: int,
    stopping: EarlyStopping | None,
    *,
    start: tuple[Key, dict] | None = None,
    describe: Callable[[int, dict], str] | None = None,
    label: str = "training",
    progress: bool = True,
) -> TrainingRun:
    """Run ``run_epoch(epoch)`` for epochs ``1..max_epochs``; it trains one epoch and returns
    ``(key, record)``. With ``stopping``, the weights of the epoch with the lowest key (the
    first on ties) are restored at the end and training stops after ``patience`` epochs
    without improvement; ``start`` = the untrained model's ``(key, record)`` (epoch 0), which
    then competes too. Without ``stopping`` every epoch runs and the last one is kept.
    ``describe(epoch, record)`` is the progress text after an epoch.
    """
    run = TrainingRun()
    best_state = None
    if start is not None:
        run.best_key, record = start
        run.history.append(record)
        if stopping is not None:
            best_state = stopping.snapshot()
    stale = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=max_epochs)
        for epoch in range(1, max_epochs + 1):
            key, record = run_epoch(epoch)
            run.history.append(record)
            text = label if describe is None else f"{label} {describe(epoch, record)}"
            bar.update(task, advance=1, description=text)
            if stopping is None:
                run.best_epoch = epoch
                continue
            if best_state is None or key < run.best_key:
                run.best_key, run.best_epoch, stale = key, epoch, 0
                best_state = stopping.snapshot()
            else:
                stale += 1
                if stale >= stopping.patience:
                    break
    if stopping is not None and best_state is not None:
        stopping.restore(best_state)
    return run
