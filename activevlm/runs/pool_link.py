"""Which pool a run reads: the absolute path in ``state.json``, re-pointed with ``--pool``.

A run stores its pool's absolute path and a checksum of its sample ids. When the pool has
moved, pass the new directory (``--pool`` on ``select``, ``labels import``, ``finetune`` and
``status``): it is accepted if it was embedded with the run's model and holds the same sample
ids (same checksum; for runs made before checksums were recorded: every labelled, queued
and skipped id), and the run then records the new path.
"""

from __future__ import annotations

from pathlib import Path

from activevlm.pool import Pool, PoolError, open_pool
from activevlm.runs.errors import RunError
from activevlm.runs.lock import run_lock
from activevlm.runs.state import RunState


def link_pool(state: RunState, pool: Pool) -> None:
    """Check that ``pool`` is the run's pool (model id, sample ids); record its absolute path
    and checksum in ``state.json`` when they changed."""
    where = Path(pool.path).absolute()
    if pool.model_id != state.model_id:
        raise RunError(f"run {state.path} was made for model {state.model_id!r}, but pool "
                       f"{where} was embedded with {pool.model_id!r}; use another --run "
                       "directory or the run's own pool")
    checksum = pool.sample_id_checksum
    if state.pool_checksum is not None and state.pool_checksum != checksum:
        raise RunError(f"pool {where} does not hold the sample ids of run {state.path}'s pool "
                       f"{state.pool} (sample-id checksum {checksum}, the run has "
                       f"{state.pool_checksum}); a run can only be re-pointed to a copy of "
                       "the same pool")
    if state.pool_checksum is None:
        missing = sorted(state.excluded() - set(pool.items["sample_id"]))
        if missing:
            raise RunError(f"pool {where} lacks {len(missing)} sample id(s) of run "
                           f"{state.path}, e.g. {missing[:5]}; it is not the run's pool")
    if state.pool != str(where):
        with run_lock(state.path):
            state.reload()
            state.pool, state.pool_checksum = str(where), checksum
            state.save()


def open_run_pool(state: RunState, pool: str | Path | None = None) -> Pool:
    """The run's pool, or ``pool`` (a directory) after checking it is the same pool."""
    path = Path(pool) if pool is not None else Path(state.pool)
    if pool is None and not path.is_dir():
        raise RunError(f"the pool of run {state.path}, {path}, is not there (moved or "
                       "deleted?); pass its new location with --pool DIR to re-point the run "
                       "(checked by model id and sample ids)")
    try:
        opened = open_pool(path)
    except PoolError as e:
        raise PoolError(f"{e} (the pool of run {state.path})") from e
    link_pool(state, opened)
    return opened
