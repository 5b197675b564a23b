"""Strategy names and batch options: plain data, cheap to import (no torch, no FAISS).

Names: ``BASE[-targeted|-untargeted]`` with ``BASE`` a key of :data:`STRATEGIES`. Without a
suffix targeting is automatic: targeted whenever there is a target set.
:func:`resolve_targeting` is the one place that decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from activevlm.utils.constraints import Interval, check_constraints

TARGETED, UNTARGETED = "-targeted", "-untargeted"
DEFAULT_PSEUDO_SAMPLES = 4  # why: activevlm.acquisition.pseudo_label


class BatchRule(StrEnum):
    """How the candidates (and their scores) become a batch (:mod:`.rules`)."""

    TOPK = "topk"
    STOCHASTIC = "stochastic"  # Kirsch et al. 2023: sample ∝ weight(score), no replacement
    DIVERSE = "diverse"  # best item of each k-means cluster of the best candidates
    GREEDY = "greedy"  # EPIG/BALD, posterior conditioned on each pick (MATH.md §6)
    PSEUDO_LABEL = "pseudo-label"  # GREEDY, each pick with sampled labels too (MATH.md §7)
    TYPICAL = "typical"  # GREEDY over the typical point of each k-means cluster
    TYPICLUST = "typiclust"  # coverage: the typical point of uncovered clusters
    PROBCOVER = "probcover"  # coverage: greedy max coverage of δ-balls

    @property
    def orders_scores(self) -> bool:
        """Whether the rule walks a score order (class balance and dedup apply)."""
        return self in (BatchRule.TOPK, BatchRule.STOCHASTIC, BatchRule.DIVERSE)

    @property
    def conditions(self) -> bool:
        """Whether the rule conditions the posterior on its picks (EPIG/BALD only)."""
        return self in (BatchRule.GREEDY, BatchRule.PSEUDO_LABEL, BatchRule.TYPICAL)

    @property
    def reads_scores(self) -> bool:
        return self not in (BatchRule.TYPICLUST, BatchRule.PROBCOVER)


class Weighting(StrEnum):
    """Stochastic batches: weight ``score^β`` (power) or ``exp(β·score)`` (softmax)."""

    POWER = "power"
    SOFTMAX = "softmax"


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its ``heuristic`` (None: it reads no scores), whether it scores
    on posterior draws (``bayesian``), whether it needs ViLU failure probabilities ``[N]``
    (``failure``: None, "scores" = they are the score, "weights" = they multiply EPIG) and
    the batch rule it always uses (``rule``; None: the one asked for)."""

    heuristic: str | None
    bayesian: bool
    failure: str | None = None
    rule: BatchRule | None = None


class Phase(StrEnum):
    """Which part of a :class:`PhasedSpec` chooses a round."""

    COVERAGE = "coverage"
    UNCERTAINTY = "uncertainty"


@dataclass(frozen=True)
class PhasedSpec:
    """A regime-aware strategy: ``early`` (a coverage strategy) while the run has acquired
    fewer than ``switch_per_class`` labels per class of the label set, ``late`` (an
    uncertainty strategy, which takes the batch options) afterwards.

    The low/high-budget phase change of Hacohen et al. 2022 ("Active learning on a budget"):
    representative picks win a cold start, uncertainty wins once every class has a few
    labels; TCM (Doucet et al. 2024) switches TypiClust → margin. The switch reads only the
    run's own state (labels and queued items so far, the number of classes), fixed in advance
    at one label per class: below it the model has not seen most classes labelled, so its
    uncertainty is mostly about classes it has never been shown.
    """

    early: str
    late: str
    switch_per_class: float = 1.0

    heuristic = None
    failure = None
    rule = None

    @property
    def bayesian(self) -> bool:
        return STRATEGIES[self.early].bayesian or STRATEGIES[self.late].bayesian

    def phase(self, n_acquired: int, n_classes: int) -> Phase:
        """The phase of a round that starts with ``n_acquired`` labelled or queued items."""
        return (Phase.COVERAGE if n_acquired < self.switch_per_class * n_classes
                else Phase.UNCERTAINTY)


STRATEGIES: dict[str, StrategySpec | PhasedSpec] = {
    "random": StrategySpec("random", False),
    "entropy": StrategySpec("entropy", False),  # MAP predictive entropy
    "bayes-entropy": StrategySpec("entropy", True),  # entropy of the posterior predictive
    "margin": StrategySpec("margin", False),
    "bayes-margin": StrategySpec("margin", True),  # margin of the posterior predictive
    "bald": StrategySpec("bald", True),
    "epig": StrategySpec("epig", True),
    "vilu": StrategySpec("vilu", False, failure="scores"),
    "vilu+epig": StrategySpec("epig", True, failure="weights"),  # EPIG · p_fail
    "typiclust": StrategySpec(None, False, rule=BatchRule.TYPICLUST),  # Hacohen et al. 2022
    "probcover": StrategySpec(None, False, rule=BatchRule.PROBCOVER),  # Yehuda et al. 2022
    # regime-aware: random picks (targeted: among the target's neighbours) for the cold
    # start, then the posterior predictive's margin (benchmarks/selection/RESULTS.md)
    "auto": PhasedSpec("random", "bayes-margin"),
    "tcm": PhasedSpec("typiclust", "margin"),  # Doucet et al. 2024: TypiClust, then margin
}


@dataclass(frozen=True)
class BatchOptions:
    """The batch rule and its options.

    ``rule``: :class:`BatchRule`; ``beta``/``weighting``: stochastic batches; ``prefilter``:
    the diverse batch clusters the best ``prefilter × budget`` candidates;
    ``class_balanced``: walk the order round-robin over predicted classes, among the best
    ``balance_within × budget`` candidates only when set; ``dedup_similarity``: skip items
    whose cosine similarity to a taken one exceeds it; ``pseudo_samples``: the pseudo-label
    rule's branches S (sampled labels per pick; default and cost in
    :mod:`activevlm.acquisition.pseudo_label`).
    """

    rule: BatchRule = BatchRule.TOPK
    beta: float = 1.0
    weighting: Weighting = Weighting.POWER
    prefilter: float = 4.0
    class_balanced: bool = False
    balance_within: float | None = None
    dedup_similarity: float | None = None
    pseudo_samples: int = DEFAULT_PSEUDO_SAMPLES

    _constraints = {
        "rule": [BatchRule],
        "beta": [Interval(0, None)],
        "weighting": [Weighting],
        "prefilter": [Interval(1, None)],
        "class_balanced": [bool],
        "balance_within": [None, Interval(1, None)],
        "dedup_similarity": [None, Interval(-1, 1)],
        "pseudo_samples": [Interval(1, None, integer=True)],
    }

    def __post_init__(self) -> None:
        check_constraints(self)

    @property
    def uses_index(self) -> bool:
        """Whether the rule needs the FAISS index of the pool's embeddings."""
        return self.rule is BatchRule.DIVERSE or self.dedup_similarity is not None



def parse_strategy(name: str) -> tuple[str, bool | None]:
    """``"epig-targeted"`` -> ``("epig", True)``, ``"epig"`` -> ``("epig", None)`` (auto)."""
    for suffix, targeted in ((TARGETED, True), (UNTARGETED, False)):
        if name.endswith(suffix) and name[: -len(suffix)] in STRATEGIES:
            return name[: -len(suffix)], targeted
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}, "
                         f"optionally with the suffix {TARGETED!r} or {UNTARGETED!r}")
    return name, None


def resolve_targeting(name: str, *, has_target: bool,
                      targeted: bool | None = None) -> tuple[str, bool]:
    """``(base name, targeted)`` that a strategy name means: targeting decided in one place.

    ``targeted``: an explicit choice (it must agree with a suffix in ``name``); None = the
    suffix, else automatic: targeted whenever there is a target set (``has_target``).
    """
    base, suffix = parse_strategy(name)
    if suffix is not None and targeted is not None and suffix != targeted:
        raise ValueError(f"strategy {name!r} contradicts targeted={targeted}")
    if targeted is None:
        targeted = suffix
    return base, has_target if targeted is None else bool(targeted)


def check_composition(name: str, batch: BatchOptions) -> None:
    """Refuse a strategy and batch options that do not compose, naming both."""
    base, _ = parse_strategy(name)
    spec = STRATEGIES[base]
    if isinstance(spec, PhasedSpec):  # the batch options are the uncertainty phase's
        check_composition(spec.late, batch)
        return
    if spec.rule is not None and batch.rule is not BatchRule.TOPK:
        raise ValueError(f"strategy {base!r} is its own batch rule; leave the batch rule at "
                         f"'topk', not {batch.rule.value!r}")
    if batch.rule.conditions and spec.heuristic not in ("epig", "bald"):
        raise ValueError(f"batch rule {batch.rule.value!r} conditions the posterior on its "
                         f"picks: it needs strategy epig or bald, not {base!r}")
    rule = spec.rule or batch.rule
    if not rule.orders_scores and (batch.class_balanced or batch.dedup_similarity is not None):
        raise ValueError(f"class balance and dedup walk a score order; batch rule "
                         f"{rule.value!r} does not")

