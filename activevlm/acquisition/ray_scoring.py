"""``score_pool_ray``: :func:`~activevlm.acquisition.scoring.score_pool` as a Ray Data
pipeline over row ranges of the pool.

The driver puts the joint draws, the activation sources (memory-mapped pool shards pickle as
their file names), the heuristic and EPIG's target probabilities in Ray's object store once;
each actor fetches them once and scores whole row ranges with ``score_pool`` itself. Ranges
start at multiples of ``chunk_size``, so every chunk is the one the single-process loop
evaluates and the scores are the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from activevlm.acquisition.heuristics import Heuristic, get_heuristic
from activevlm.acquisition.scoring import score_pool
from activevlm.bayes.draws import JointDraws
from activevlm.pool.rows import RowView
from activevlm.utils.ray_cluster import actor_count, actor_map, connect, import_ray

DEFAULT_CHUNKS_PER_TASK = 32


@dataclass
class _ScoreWork:
    """What every scoring actor needs, put in Ray's object store once."""

    draws: JointDraws
    pool_act: Any
    residual: Any
    heuristic: Heuristic
    target_probs: torch.Tensor | None
    external_scores: Any
    chunk_size: int


class _RangeScorer:
    """Ray Data worker: fetches the draws once, then scores row ranges ``[start, stop)``."""

    def __init__(self, refs: list) -> None:
        self.work: _ScoreWork = import_ray().get(refs[0])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        w = self.work
        rows, scores = [], []
        for start, stop in zip(batch["start"].tolist(), batch["stop"].tolist(), strict=True):
            r = np.arange(start, stop)
            ext = None if w.external_scores is None else w.external_scores[start:stop]
            scores.append(score_pool(
                w.draws, RowView(w.pool_act, r),
                w.heuristic, residual=None if w.residual is None else RowView(w.residual, r),
                target_probs=w.target_probs, external_scores=ext, chunk_size=w.chunk_size,
                progress=False))
            rows.append(r)
        return {"row": np.concatenate(rows), "score": np.concatenate(scores)}


def score_pool_ray(
    draws: JointDraws,
    pool_act,
    heuristic: str | Heuristic,
    *,
    residual=None,
    target_probs: torch.Tensor | None = None,
    external_scores=None,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
    address: str | None = None,
    actors: int | None = None,
    rows_per_task: int | None = None,
) -> np.ndarray:
    """Scores ``[N]`` (float64) of every pool row, equal to ``score_pool``'s with the same
    arguments, computed by Ray actors.

    ``address``: the cluster (:func:`activevlm.utils.ray_cluster.connect`; None = this
    process's Ray session, else a new local one); ``actors``: scoring actors (default: one
    per CPU of the cluster; one GPU each when the draws are on CUDA); ``rows_per_task``: rows
    per unit of work, rounded up to a multiple of ``chunk_size`` (default 32 chunks).
    ``pool_act``/``residual`` must be readable by every actor: arrays, or pool shards on a
    file system they share. Heuristics that ignore probabilities (``random``, ``vilu``) are
    evaluated here in one go, as ``score_pool`` does; one that draws random numbers per chunk
    is refused (its stream would depend on how the rows are split).
    """
    h = get_heuristic(heuristic)
    if not h.uses_probs:
        return score_pool(draws, pool_act, h, residual=residual, target_probs=target_probs,
                          external_scores=external_scores, generator=generator,
                          chunk_size=chunk_size, progress=progress)
    if "generator" in h.requires:
        raise ValueError(f"heuristic {h.name!r} draws random numbers chunk by chunk; its "
                         "scores would depend on how Ray splits the pool: score it without Ray")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = pool_act.shape[0]
    if residual is not None and residual.shape[0] != n:
        raise ValueError(f"residual has {residual.shape[0]} rows, pool_act has {n}")
    per_task = chunk_size * max(1, math.ceil(
        (rows_per_task or chunk_size * DEFAULT_CHUNKS_PER_TASK) / chunk_size))
    ray = connect(address, progress=progress)
    gpus = 1 if draws.device.type == "cuda" else 0
    work = _ScoreWork(draws, pool_act, residual, h, target_probs, external_scores, chunk_size)
    units = [{"start": s, "stop": min(s + per_task, n)} for s in range(0, n, per_task)]
    out = np.full(n, np.nan)
    for done in actor_map(ray, units, _RangeScorer, work,
                          actors=actors or actor_count(ray, num_cpus=1, num_gpus=gpus),
                          num_cpus=1, num_gpus=gpus):
        out[done["row"]] = done["score"]
    return out


def ray_scorer(address: str | None = None, **options) -> partial:
    """``score_pool_ray`` bound to a cluster ``address`` and ``options`` (``actors``,
    ``rows_per_task``): a drop-in for ``score_pool`` (``SelectionProblem.scorer``)."""
    return partial(score_pool_ray, address=address, **options)
