"""Batch rules: from the candidates (and their scores) to the rows of a batch.

Each :class:`~activevlm.acquisition.options.BatchRule` maps to one function
``rule(inputs: BatchInputs) -> rows [<= budget]`` in :data:`RULES`; a strategy composes its
candidates, its scores and one rule (baal's ``PowerSampling(base)``, by composition rather than
by branching on names):

- ``topk`` / ``stochastic`` / ``diverse``: a score order (:func:`.batch.select_batch`, with
  class balance and near-duplicate removal);
- ``greedy``: EPIG/BALD picks one at a time, the posterior conditioned on each pick without
  its label (:func:`.greedy.greedy_batch`), among the best ``prefilter × budget`` candidates of
  the one-pass score;
- ``pseudo-label``: the same, each pick also conditioned on ``pseudo_samples`` labels sampled
  from the posterior predictive, one per branch, the score averaged over the branches
  (:func:`.pseudo_label.pseudo_label_batch`, MATH.md §7);
- ``typical``: the same greedy rule over the most typical point of each k-means cluster
  (:func:`.hybrid.typical_greedy`);
- ``typiclust`` / ``probcover``: coverage of the image embeddings, scores unused
  (:mod:`.coverage`).

Coverage rules see the labelled (and queued) pool rows too: their clusters and balls count as
covered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from activevlm.acquisition.batch import select_batch
from activevlm.acquisition.coverage import probcover, typiclust
from activevlm.acquisition.greedy import greedy_batch
from activevlm.acquisition.hybrid import typical_greedy
from activevlm.acquisition.options import BatchOptions, BatchRule
from activevlm.acquisition.pseudo_label import pseudo_label_batch
from activevlm.acquisition.scoring import map_probs


@dataclass
class BatchInputs:
    """What a rule reads: the ``problem`` (a :class:`.strategy.SelectionProblem`), the
    candidate pool rows ``[L]`` and their ``scores [L]`` (None for coverage rules), the
    ``heuristic`` that scored them, ``budget``, ``seed`` and the batch ``options``."""

    problem: Any
    candidates: np.ndarray
    scores: np.ndarray | None
    heuristic: str | None
    budget: int
    seed: int
    options: BatchOptions


def score_order(x: BatchInputs) -> np.ndarray:
    """``topk`` / ``stochastic`` / ``diverse`` over the candidates' scores."""
    p, b = x.problem, x.options
    n = len(p.pool.items)
    full = np.zeros(n)
    full[x.candidates] = x.scores
    excluded = np.ones(n, dtype=bool)
    excluded[x.candidates] = False
    index = p.index() if (b.rule is BatchRule.DIVERSE or b.dedup_similarity is not None) \
        else None
    predicted = None
    if b.class_balanced:
        predicted = np.zeros(n, dtype=np.int64)
        predicted[x.candidates] = map_probs(p.pool, p.head, x.candidates).argmax(1)
    return select_batch(
        full, x.budget, strategy=b.rule.value, seed=x.seed, beta=b.beta,
        mode=b.weighting.value, exclude=excluded, predicted_class=predicted,
        balance_within=None if b.balance_within is None else
        int(np.ceil(b.balance_within * x.budget)),
        index=index, min_similarity=b.dedup_similarity, prefilter=b.prefilter)


def _greedy_kwargs(x: BatchInputs) -> dict:
    p = x.problem
    kwargs: dict = {"heuristic": x.heuristic, "n_draws": p.n_draws,
                    "generator": torch.Generator().manual_seed(x.seed), "device": p.device}
    if x.heuristic == "epig":
        act, res = p.target_pool.rows(p.target_rows)
        kwargs.update(target_act=act, target_residual=res)
    return kwargs


def _shortlist(x: BatchInputs) -> np.ndarray:
    """The best ``⌈prefilter·budget⌉`` candidates by their one-pass score, best first."""
    m = min(len(x.candidates), int(np.ceil(x.options.prefilter * x.budget)))
    return x.candidates[np.argsort(-x.scores, kind="stable")[:m]]


def greedy(x: BatchInputs) -> np.ndarray:
    """Greedy EPIG/BALD with label-free conditioning over the shortlist."""
    p, short = x.problem, _shortlist(x)
    act, res = p.pool.rows(short)
    batch = greedy_batch(p.posterior, p.pool.text_activations, act, min(x.budget, len(short)),
                         cand_residual=res, **_greedy_kwargs(x))
    return short[batch.positions]


def pseudo_label(x: BatchInputs) -> np.ndarray:
    """Greedy EPIG/BALD over the shortlist, conditioning each pick on
    ``options.pseudo_samples`` sampled labels (one branch each)."""
    p, short = x.problem, _shortlist(x)
    act, res = p.pool.rows(short)
    batch = pseudo_label_batch(p.posterior, p.pool.text_activations, act,
                               min(x.budget, len(short)), cand_residual=res,
                               pseudo_samples=x.options.pseudo_samples, **_greedy_kwargs(x))
    return short[batch.positions]


def _with_labelled(x: BatchInputs) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[U]`` = candidates ∪ labelled (ascending) and the mask of the labelled ones."""
    labelled = x.problem.labelled if x.problem.labelled is not None else np.empty(0, np.int64)
    rows = np.union1d(x.candidates, labelled)
    return rows, np.isin(rows, labelled) & ~np.isin(rows, x.candidates)


def typical(x: BatchInputs) -> np.ndarray:
    """Greedy EPIG/BALD over the typical representatives of k-means clusters of the
    candidates (and the labelled rows, whose clusters are skipped)."""
    p = x.problem
    rows, labelled = _with_labelled(x)
    act, res = p.pool.rows(rows, lazy=True)
    emb = p.pool.image_embeddings(rows, p.head).numpy()
    batch = typical_greedy(p.posterior, p.pool.text_activations, act, emb, x.budget,
                           labelled=labelled, residual=res, oversample=x.options.prefilter,
                           seed=x.seed, **_greedy_kwargs(x))
    return rows[batch.positions]


def _coverage(select: Callable[..., np.ndarray],
              options: Callable[[BatchInputs], dict]) -> Callable[[BatchInputs], np.ndarray]:
    def rule(x: BatchInputs) -> np.ndarray:
        rows, labelled = _with_labelled(x)
        emb = x.problem.pool.image_embeddings(rows, x.problem.head).numpy()
        return rows[select(emb, x.budget, labelled=labelled, seed=x.seed, **options(x))]

    rule.__doc__ = f"{select.__name__} over the image embeddings of the candidates."
    return rule


RULES: dict[BatchRule, Callable[[BatchInputs], np.ndarray]] = {
    BatchRule.TOPK: score_order,
    BatchRule.STOCHASTIC: score_order,
    BatchRule.DIVERSE: score_order,
    BatchRule.GREEDY: greedy,
    BatchRule.PSEUDO_LABEL: pseudo_label,
    BatchRule.TYPICAL: typical,
    BatchRule.TYPICLUST: _coverage(typiclust, options=lambda x: {}),
    BatchRule.PROBCOVER: _coverage(
        probcover, options=lambda x: {"n_classes": len(x.problem.pool.classnames)}),
}
