"""Resolve what ``activevlm select`` needs (pool, target, run, posterior) and run a round.

Without a pool it uses the demo world: its pool, its held-out target domain, and a
posterior fitted on its source domains (what the demo model was trained on).

A run directory holds the model that the next round selects with:

- ``head.safetensors`` / ``head.json``: the fine-tuned projection head (absent before the
  first fine-tuning: the pool's head is used);
- ``posterior/``: the posterior selection uses (fitted on the pool on first need, replaced
  by the refitted one after each fine-tuning);
- ``posterior_base/``: the posterior before any fine-tuning, the starting point of every
  refit (so labelled data is never counted twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from activevlm.runs.select import (
    FAILURE_STRATEGIES,
    STRATEGIES,
    SelectConfig,
    SelectionResult,
    select_round,
)
from activevlm.runs.state import RunState

DEMO_TARGET_DOMAIN = "clipart"
RUN_HEAD = "head"
RUN_POSTERIOR = "posterior"
RUN_BASE_POSTERIOR = "posterior_base"


def run_head_path(run: str | Path) -> Path:
    """``run/head`` (the stem of ``head.safetensors`` / ``head.json``)."""
    return Path(run) / RUN_HEAD


def default_fit_domains(pool) -> list[str] | None:
    """Domains a posterior for ``pool`` is fitted on by default: the demo world's source
    domains (what the demo model was trained on) for a demo pool, else all (None)."""
    if pool.manifest.get("dataset", {}).get("name") == "demo":
        from activevlm.demo.world import SOURCE_DOMAINS

        return list(SOURCE_DOMAINS)
    return None


def load_run_head(state: RunState, pool=None):
    """The run's fine-tuned head, or ``pool.head`` (None without a pool) if it has none yet."""
    from activevlm.models.head import ProjectionHead

    path = run_head_path(state.path)
    if path.with_suffix(".json").exists():
        return ProjectionHead.load(path)
    return None if pool is None else pool.head


def load_or_fit_posterior(pool, state: RunState, posterior: str | Path | None = None, *,
                          fit_domains=None, split: str | None = "train",
                          progress: bool = True, log: Callable = print):
    """``posterior`` if given, else the run's cached one, else fit on the pool and cache it."""
    from activevlm.bayes.from_pool import fit_pool_posterior
    from activevlm.bayes.posterior import BayesVLMPosterior

    path = Path(posterior) if posterior is not None else state.path / RUN_POSTERIOR
    if posterior is not None or (path / "posterior.json").exists():
        post = BayesVLMPosterior.load(path)
        if post.model_id != pool.model_id:
            raise ValueError(f"posterior {path} is for model {post.model_id!r}, "
                             f"the pool for {pool.model_id!r}")
        return post
    log(f"fitting the posterior on {pool.path} (split={split}, domains={fit_domains}) ...")
    post = fit_pool_posterior(pool, split=split, domain=fit_domains, progress=progress)
    post.save(path)
    log(f"posterior saved to {path}")
    return post


def run_select(config: SelectConfig, *, pool: str | Path | None = None,
               posterior: str | Path | None = None, target: str | None = None,
               run: str | Path | None = None, vilu_model: str | Path | None = None,
               progress: bool = True, log: Callable = print) -> tuple[SelectionResult, RunState]:
    """One selection round with everything resolved from paths; returns the result and state.

    ``target`` is a domain of the pool or a pool directory; ``run`` defaults to
    ``runs/<pool name>``. Calling it again with the same run continues with the next round.
    Every strategy scores with the run's fine-tuned head when it has one (``activevlm
    finetune``) and posterior strategies with the run's (refitted) posterior; an explicit
    ``posterior`` overrides the run's.
    """
    from activevlm.pool import open_pool

    if pool is None:
        from activevlm.demo.pool import demo_pool

        log("no --pool given: using the demo world (generated and embedded on first use)")
        pool_obj = demo_pool(progress=progress)
        target = DEMO_TARGET_DOMAIN if target is None else target
        name = "demo"
    else:
        pool_obj = open_pool(pool)
        name = Path(pool).resolve().name
    target_pool = None
    if target is not None and (Path(target) / "manifest.json").exists():
        target_pool = open_pool(target, model_id=pool_obj.model_id)
        config = replace(config, target_domain=None, target_split=None)
    elif target is not None:
        config = replace(config, target_domain=target)
    run_dir = Path(run) if run is not None else Path("runs") / name
    state = RunState.open_or_create(run_dir, str(pool_obj.path), pool_obj.model_id,
                                    pool_obj.classnames, config=asdict(config))
    post = None
    if STRATEGIES.get(config.strategy, (None, False))[1]:
        post = load_or_fit_posterior(pool_obj, state, posterior,
                                     fit_domains=default_fit_domains(pool_obj),
                                     split=config.pool_split, progress=progress, log=log)
    head = load_run_head(state, pool_obj)
    if head is not pool_obj.head:
        log(f"scoring with the run's fine-tuned head {run_head_path(state.path)}.json")
    failure_prob = None
    if config.strategy in FAILURE_STRATEGIES:
        if vilu_model is None:
            raise ValueError(f"strategy {config.strategy!r} needs --vilu-model (train one "
                             "with `activevlm vilu train`)")
        from activevlm.vilu import ViLUModel, failure_scores

        model = ViLUModel.load(vilu_model, expected_model_id=pool_obj.model_id)
        failure_prob = failure_scores(model, pool_obj)
    result = select_round(pool_obj, state, config, posterior=post, head=head,
                          target_pool=target_pool, failure_prob=failure_prob,
                          progress=progress)
    return result, state
