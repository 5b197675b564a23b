"""Selection strategies: one object from a heuristic's scores to the rows of a batch.

A :class:`Strategy` is what a user names (``"epig"``, ``"entropy-targeted"``, ...): a registered
heuristic (:mod:`activevlm.acquisition.heuristics`) evaluated on the MAP head or on joint
posterior draws, targeted or not, and a batch rule (:class:`BatchOptions`). It is pure, like
small-text's ``query``: :meth:`Strategy.select` reads a :class:`SelectionProblem` and returns
rows and scores; it writes nothing (caches such as the FAISS index are the caller's, passed in
as a callable). ``select``, ``loop``, ``bench``, the notebook and the Python API all resolve a
name through :func:`make_strategy`, so a name means the same selection everywhere.

Names and targeting: :mod:`activevlm.acquisition.options`.

- **Targeted** (BayesVLM's protocol): score the target points, order them with the batch rule
  and map them, best first, to their nearest unlabelled pool neighbours (round robin).
- **Untargeted**: score the candidate pool rows and take ``budget`` of them with the batch
  rule (:func:`activevlm.acquisition.batch.select_batch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch

from activevlm.acquisition.epig import epig_scores
from activevlm.acquisition.heuristics import Heuristic, get_heuristic
from activevlm.acquisition.options import (
    STRATEGIES,
    TARGETED,
    UNTARGETED,
    BatchOptions,
    BatchRule,
    Phase,
    PhasedSpec,
    StrategySpec,
    check_composition,
    resolve_targeting,
)
from activevlm.acquisition.rules import RULES, BatchInputs
from activevlm.acquisition.scoring import score_pool
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.marginal_draws import SCORING_CHUNK, MarginalDraws
from activevlm.index import EmbeddingIndex, NeighbourSearch, nearest_unique
from activevlm.models.head import ProjectionHead
from activevlm.vilu.combine import failure_weighted


@dataclass
class SelectionProblem:
    """Everything a strategy reads (nothing is written).

    ``candidates [n]``: pool rows that may be queued. ``target_points [T]``: rows of
    ``target_pool`` (default ``pool``) whose neighbourhood targeted selection draws from, in
    the order their neighbours are taken; ``target_rows [M]``: the sample of them that is
    EPIG's target distribution. ``failure_prob [N]``: ViLU failure probabilities of all pool
    rows. ``index()``: the FAISS index of the pool's image embeddings under ``head`` (built
    or loaded by the caller, on first need); ``neighbours()``: what targeted selection
    searches for the pool rows nearest to the target points (default: ``index()``; ``select``
    passes an exact search streamed over the embedding shards). ``n_draws``: joint posterior
    draws K; ``epig_top_classes``: EPIG's coarsened lower bound (see ``epig.py``).
    ``labelled``: pool rows already labelled or queued (coverage rules count them as
    covered). ``device``: where the greedy rules run ("auto": CUDA when present). ``scorer``:
    what scores the candidates for the score-order rules, ``score_pool`` or a drop-in with
    its signature (``ray_scoring.ray_scorer``: the same scores computed on a Ray cluster).
    """

    pool: Any
    candidates: np.ndarray
    head: ProjectionHead
    posterior: Any = None
    target_pool: Any = None
    target_rows: np.ndarray | None = None
    target_points: np.ndarray | None = None
    failure_prob: np.ndarray | None = None
    index: Callable[[], EmbeddingIndex] | None = None
    neighbours: Callable[[], NeighbourSearch] | None = None
    n_draws: int = 100
    chunk_size: int = 2048
    epig_top_classes: int | None = None
    labelled: np.ndarray | None = None
    device: str = "auto"
    progress: bool = True
    scorer: Callable[..., np.ndarray] = score_pool

    def __post_init__(self) -> None:
        if self.target_pool is None:
            self.target_pool = self.pool
        if self.target_points is None:
            self.target_points = self.target_rows


@dataclass
class Selection:
    """``rows [<=budget]`` pool rows in selection order with their ``scores``;
    ``scored_rows [L]`` / ``scores_all [L]``: every candidate that was scored; ``phase``: the
    phase of a regime-aware strategy that chose them (None for the others)."""

    rows: np.ndarray
    scores: np.ndarray
    scored_rows: np.ndarray
    scores_all: np.ndarray
    phase: Phase | None = None


@dataclass(frozen=True)
class _Named:
    """A strategy's registered ``name`` and its resolved targeting."""

    name: str
    targeted: bool

    @property
    def label(self) -> str:
        """The name with its resolved targeting, e.g. ``"epig-targeted"``."""
        return self.name + (TARGETED if self.targeted else UNTARGETED)


@dataclass(frozen=True)
class Strategy(_Named):
    """A named selection rule; build it with :func:`make_strategy`.

    Three steps, each a part of its own: the **candidates** (targeted: the
    ``neighbourhood × budget`` nearest unlabelled pool neighbours of the target points, taken
    round robin, so that the scores choose among many more items than the budget; else all
    candidates), their **scores** (the heuristic on the MAP head or on joint posterior
    draws), and the **batch rule** (:class:`BatchOptions`).
    """

    batch: BatchOptions = field(default_factory=BatchOptions)
    neighbourhood: float = 10.0

    @property
    def spec(self) -> StrategySpec:
        return STRATEGIES[self.name]

    @property
    def needs_target(self) -> bool:
        """Whether :meth:`select` reads the target set."""
        return self.spec.heuristic == "epig" or self.targeted

    @property
    def rule(self) -> BatchRule:
        """The batch rule: the strategy's own (coverage) or the one asked for."""
        return self.spec.rule or self.batch.rule

    def select(self, problem: SelectionProblem, budget: int, seed: int) -> Selection:
        """Up to ``budget`` pool rows from ``problem.candidates`` (fewer only when they run
        out); the same problem and seed give the same rows."""
        self._check(problem)
        candidates = self.candidates(problem, budget)
        scores = self.score(problem, candidates, seed) if self.rule.reads_scores else None
        rows = RULES[self.rule](BatchInputs(problem, candidates, scores, self.spec.heuristic,
                                            budget, seed, self.batch))
        if scores is None:
            scores = np.full(len(candidates), np.nan)
        by_row = dict(zip(candidates.tolist(), scores.tolist(), strict=True))
        return Selection(rows, np.array([by_row[r] for r in rows.tolist()], dtype=float),
                         candidates, scores)

    def _check(self, problem: SelectionProblem) -> None:
        spec = self.spec
        if self.rule.conditions and problem.posterior is None:
            raise ValueError(f"batch rule {self.rule.value!r} needs a posterior")
        if spec.bayesian and problem.posterior is None:
            raise ValueError(f"strategy {self.name!r} needs a posterior")
        if spec.failure and problem.failure_prob is None:
            raise ValueError(f"strategy {self.name!r} needs failure probabilities from a "
                             "trained ViLU model")
        if self.needs_target and problem.target_rows is None:
            raise ValueError(f"strategy {self.label!r} needs a target domain or target pool "
                             "(--target)")

    def candidates(self, p: SelectionProblem, budget: int) -> np.ndarray:
        """Pool rows ``[L]`` (ascending) this strategy scores: targeted, the
        ``min(⌈neighbourhood·budget⌉, n)`` unlabelled pool rows nearest to the target points
        (round robin over ``p.target_points``: each takes its nearest row not yet taken);
        untargeted, all of ``p.candidates``."""
        if not self.targeted:
            return p.candidates
        index = (p.neighbours or p.index)()
        excluded = np.ones(index.n, dtype=bool)
        excluded[p.candidates] = False
        wanted = min(int(np.ceil(self.neighbourhood * budget)), len(p.candidates))
        # round robin: only the first `wanted` target points can take a row
        emb = p.target_pool.image_embeddings(p.target_points[:wanted], p.head).numpy()
        return np.sort(nearest_unique(index, emb, wanted, exclude=excluded))

    def score(self, p: SelectionProblem, rows: np.ndarray, seed: int) -> np.ndarray:
        """Scores ``[len(rows)]`` of pool ``rows`` (higher = first) under this strategy's
        heuristic; EPIG's target set is ``p.target_rows``, scored under the same draws.
        Per-input heuristics (BALD, entropy) on the posterior use :class:`MarginalDraws`:
        each row's score has the law it has under joint draws, at a fraction of the cost."""
        pool = p.pool
        spec = self.spec
        generator = torch.Generator().manual_seed(seed)
        h = get_heuristic(spec.heuristic)
        if spec.bayesian:
            kind = MarginalDraws if h.per_input else JointDraws
            draws = kind.from_posterior(p.posterior, pool.text_activations, p.n_draws,
                                        generator)
        else:
            draws = JointDraws.from_head(p.head, pool.text_activations)
        if h.name == "epig" and p.epig_top_classes is not None:
            h = Heuristic("epig", partial(epig_scores, top_classes=p.epig_top_classes),
                          h.requires)
        target_probs = None
        if "target_probs" in h.requires:
            target_probs = draws.probs_chunked(*p.target_pool.rows(p.target_rows, lazy=True))
        failure = None if p.failure_prob is None else p.failure_prob[rows]
        act, residual = pool.rows(rows, lazy=True)
        chunk = p.chunk_size
        if isinstance(draws, MarginalDraws):
            chunk = min(chunk, SCORING_CHUNK)
        scores = p.scorer(draws, act, h, residual=residual, target_probs=target_probs,
                          external_scores=failure if spec.failure == "scores" else None,
                          generator=generator, chunk_size=chunk, progress=p.progress)
        if spec.failure == "weights":
            scores = failure_weighted(scores, failure)
        return scores


@dataclass(frozen=True)
class PhasedStrategy(_Named):
    """A regime-aware strategy (:class:`PhasedSpec`): ``early`` while the run is in its
    coverage phase, ``late`` afterwards; the same interface as :class:`Strategy`."""

    early: Strategy
    late: Strategy
    neighbourhood: float = 10.0

    @property
    def spec(self) -> PhasedSpec:
        return STRATEGIES[self.name]

    @property
    def needs_target(self) -> bool:
        return self.early.needs_target or self.late.needs_target

    @property
    def batch(self) -> BatchOptions:
        return self.late.batch

    def phase(self, problem: SelectionProblem) -> Phase:
        """The phase from the run's state: its labelled and queued rows, its classes."""
        n = 0 if problem.labelled is None else len(problem.labelled)
        return self.spec.phase(n, len(problem.pool.classnames))

    def select(self, problem: SelectionProblem, budget: int, seed: int) -> Selection:
        phase = self.phase(problem)
        part = self.early if phase is Phase.COVERAGE else self.late
        return replace(part.select(problem, budget, seed), phase=phase)


def make_strategy(name: str, *, has_target: bool, targeted: bool | None = None,
                  batch: BatchOptions | None = None,
                  neighbourhood: float = 10.0) -> Strategy | PhasedStrategy:
    """The :class:`Strategy` (or :class:`PhasedStrategy`) a name means (targeting:
    :func:`resolve_targeting`; a phased strategy's batch options are its uncertainty
    phase's)."""
    base, targeted = resolve_targeting(name, has_target=has_target, targeted=targeted)
    batch = batch or BatchOptions()
    check_composition(base, batch)
    if neighbourhood < 1:
        raise ValueError(f"neighbourhood must be >= 1 (a multiple of the budget), got "
                         f"{neighbourhood}")
    spec = STRATEGIES[base]
    if isinstance(spec, PhasedSpec):
        return PhasedStrategy(base, targeted,
                              Strategy(spec.early, targeted, BatchOptions(), neighbourhood),
                              Strategy(spec.late, targeted, batch, neighbourhood), neighbourhood)
    return Strategy(base, targeted, batch, neighbourhood)
