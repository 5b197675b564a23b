"""``SelectConfig``: the options of one selection round (plain data, cheap to import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from activevlm.acquisition.options import BatchOptions, check_composition, resolve_targeting
from activevlm.utils.constraints import Interval, check_constraints


@dataclass(frozen=True)
class SelectConfig:
    """How one round chooses ``budget`` items.

    ``strategy``: a name of :data:`activevlm.acquisition.STRATEGIES`, optionally with
    ``-targeted`` / ``-untargeted``; ``targeted`` the same choice as an option (None = the
    suffix, else automatic: targeted whenever there is a target, see
    :func:`activevlm.acquisition.options.resolve_targeting`). ``target_domain`` /
    ``target_split``: the target set, its unlabelled items; ``n_targets`` of them (a seeded
    sample) are EPIG's target distribution M. Targeted selection scores the
    ``neighbourhood × budget`` unlabelled pool items nearest to the target points (each
    target point in turn takes its nearest item not yet taken), so that the scores choose
    the batch among many more items than the budget.
    ``pool_split``: which items may be queued (None = all). ``n_draws``: joint posterior
    draws K. ``batch``: the batch rule and its options (:class:`BatchOptions`).
    ``epig_top_classes``: EPIG over each input's top classes plus "other" (a lower bound,
    ``(C / (c + 1))²`` times cheaper). ``device``: where the greedy batch rules run ("auto":
    CUDA when present). ``ray``: score the candidates of untargeted selection on Ray
    (``acquisition.ray_scoring``; same scores), on a local Ray or on the cluster at
    ``ray_address`` (which implies ``ray``).
    """

    budget: int = 500
    strategy: str = "auto"  # benchmarks/selection/RESULTS.md (issue 23): random, then bayes-margin
    target_domain: str | None = None
    target_split: str | None = "val"
    targeted: bool | None = None
    pool_split: str | None = "train"
    n_draws: int = 100
    n_targets: int = 256
    batch: BatchOptions = field(default_factory=BatchOptions)
    seed: int = 0
    chunk_size: int = 2048
    epig_top_classes: int | None = None
    neighbourhood: float = 10.0
    device: str = "auto"
    ray: bool = False
    ray_address: str | None = None

    _constraints = {
        "budget": [Interval(1, None, integer=True)],
        "strategy": [str],
        "target_domain": [None, str],
        "target_split": [None, str],
        "targeted": [None, bool],
        "pool_split": [None, str],
        "n_draws": [Interval(1, None, integer=True)],
        "n_targets": [Interval(1, None, integer=True)],
        "batch": [BatchOptions],
        "seed": [Interval(0, None, integer=True)],
        "chunk_size": [Interval(1, None, integer=True)],
        "epig_top_classes": [None, Interval(1, None, integer=True)],
        "neighbourhood": [Interval(1, None)],
        "device": [str],
        "ray": [bool],
        "ray_address": [None, str],
    }

    def __post_init__(self) -> None:
        check_constraints(self)
        check_composition(self.strategy, self.batch)

    def resolve(self, has_target: bool) -> tuple[str, bool]:
        """``(strategy base name, targeted)`` these options mean with or without a target
        set (:func:`activevlm.acquisition.options.resolve_targeting`)."""
        return resolve_targeting(self.strategy, has_target=has_target, targeted=self.targeted)

    @property
    def uses_ray(self) -> bool:
        """Whether untargeted scoring runs on Ray (``ray`` or a ``ray_address``)."""
        return self.ray or self.ray_address is not None
