"""Resolve what ``activevlm select`` needs (pool, target, run, posterior) and run a round.

Without a pool it uses the demo world: its pool, its held-out target domain, and a
posterior fitted on its source domains (what the demo model was trained on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from activevlm.acquisition import STRATEGIES
from activevlm.demo.pool import demo_pool
from activevlm.demo.world import SOURCE_DOMAINS
from activevlm.pool import open_pool
from activevlm.runs.checks import (
    check_document_root,
    check_posterior,
    check_split,
    check_target,
)
from activevlm.runs.config import SelectConfig
from activevlm.runs.lock import run_lock
from activevlm.runs.pool_link import link_pool
from activevlm.runs.queue import LabelStudioOptions
from activevlm.runs.rundir import RunDir, load_posterior, run_posterior
from activevlm.runs.select import SelectionResult, select_round
from activevlm.runs.state import RunState
from activevlm.utils.constraints import config_to_dict
from activevlm.vilu import ViLUModel, failure_scores

DEMO_TARGET_DOMAIN = "clipart"


class PendingItemsError(ValueError):
    """A new round was asked for while earlier rounds' items still await labels."""

    def __init__(self, state: RunState):
        rounds = sorted(set(state.queued.values()))
        super().__init__(
            f"run {state.path}: {len(state.queued)} item(s) queued in round(s) "
            f"{', '.join(map(str, rounds))} still await labels. Import them first (`activevlm "
            f"labels import FILE --run {state.path}`), or pass --force to queue a new round "
            f"anyway (pending items stay queued and are never queued twice).")


def default_fit_domains(pool) -> list[str] | None:
    """Domains a posterior for ``pool`` is fitted on by default: the demo world's source
    domains (what the demo model was trained on) for a demo pool, else all (None)."""
    if pool.manifest.get("dataset", {}).get("name") == "demo":
        return list(SOURCE_DOMAINS)
    return None


def run_select(config: SelectConfig, *, pool: str | Path | None = None,
               posterior: str | Path | None = None, target: str | None = None,
               run: str | Path | None = None, vilu_model: str | Path | None = None,
               labelstudio: LabelStudioOptions = LabelStudioOptions(),
               allow_pending: bool = False, progress: bool = True,
               log: Callable = print) -> tuple[SelectionResult, RunState]:
    """One selection round with everything resolved from paths; returns the result and state.

    ``target`` is a domain of the pool or a pool directory; ``run`` defaults to
    ``runs/<pool name>``. Calling it again with the same run continues with the next round.
    Every strategy scores with the run's fine-tuned head when it has one (``activevlm
    finetune``) and posterior strategies with the run's (refitted) posterior; an explicit
    ``posterior`` overrides the run's. A run with items still queued (awaiting labels) is
    refused unless ``allow_pending`` (:class:`PendingItemsError`, before any work). The
    run's lock is held from the pending-items check to the written round, so a writer that
    finished meanwhile (a round, new labels, a fine-tuned head) is seen, never overwritten.
    """
    if pool is None:
        log("no --pool given: using the demo world (generated and embedded on first use)")
        pool_obj = demo_pool(progress=progress)
        target = DEMO_TARGET_DOMAIN if target is None else target
        name = "demo"
    else:
        pool_obj = open_pool(pool)
        name = Path(pool).resolve().name
    target_pool = None
    if target is not None and (Path(target).resolve() / "manifest.json").exists():
        target_pool = open_pool(target, model_id=pool_obj.model_id)
        config = replace(config, target_domain=None, target_split=None)
    elif target is not None:
        config = replace(config, target_domain=target)
    spec = STRATEGIES[config.resolve(has_target=target is not None)[0]]
    run_dir = RunDir(Path(run) if run is not None else Path("runs") / name)  # resolved
    # checked before any posterior is fitted or any file is written
    check_target(pool_obj, target)
    check_split(pool_obj, config.pool_split, "--pool-split")
    if target_pool is None:
        check_split(pool_obj, config.target_split, "--target-split")
    check_posterior(posterior, pool_obj)
    check_document_root(pool_obj, labelstudio.document_root)
    failure_prob = None
    if spec.failure is not None:  # the pool's, not the run's: computed outside the lock
        if vilu_model is None:
            raise ValueError(f"strategy {config.strategy!r} needs --vilu-model (train one "
                             "with `activevlm vilu train`)")
        model = ViLUModel.load(vilu_model, expected_model_id=pool_obj.model_id)
        failure_prob = failure_scores(model, pool_obj)
    # read-decide-write under one hold: the pending-items check, the run's head and
    # posterior and the round all see the run as it is once no other writer is at work
    with run_lock(run_dir.path):
        state = RunState.open_or_create(run_dir.path, str(pool_obj.path), pool_obj.model_id,
                                        pool_obj.classnames, config=config_to_dict(config),
                                        pool_checksum=pool_obj.sample_id_checksum)
        link_pool(state, pool_obj)  # an existing run re-pointed with --pool
        if state.queued and not allow_pending:
            raise PendingItemsError(state)
        head = run_dir.load_head(pool_obj)  # checked against the pool before any fit
        post = None
        if spec.bayesian:
            post = (load_posterior(posterior, pool_obj) if posterior is not None else
                    run_posterior(run_dir, pool_obj, fit_domains=default_fit_domains(pool_obj),
                                  split=config.pool_split, progress=progress, log=log))
        if head is not pool_obj.head:
            log(f"scoring with the run's fine-tuned head {run_dir.head}.json")
        result = select_round(pool_obj, state, config, posterior=post, head=head,
                              target_pool=target_pool, failure_prob=failure_prob,
                              labelstudio=labelstudio, progress=progress)
    return result, state
