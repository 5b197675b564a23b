"""``LoopConfig``: one simulated active-learning campaign (selection, rounds, protocol splits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from activevlm.finetune import FinetuneConfig, RefitConfig
from activevlm.runs.config import SelectConfig
from activevlm.utils.constraints import (
    Interval,
    check_constraints,
    config_from_dict,
    config_to_dict,
    deep_merge,
)
from activevlm.vilu.model import ViLUConfig


class Predictive(StrEnum):
    """How evaluation turns the posterior into class probabilities (MATH.md §2)."""

    PROBIT = "probit"
    MC = "mc"


@dataclass(frozen=True)
class LoopConfig:
    """A simulated-oracle loop following the BayesVLM active-learning protocol.

    Each of ``rounds`` rounds selects with ``select`` (strategy, budget, target domain and
    split, pool split: exactly what ``activevlm select`` would do in the same state), labels
    the queue from the dataset, fine-tunes the pool's head on all labels so far (early
    stopping on the labelled ``val_split`` of the target domain), refits the posterior
    (``refit.mode``) and evaluates on ``test_split`` of the target domain (None = every
    domain). The base posterior is fitted on ``posterior_split``/``posterior_domains`` unless
    one is given to ``run_loop``. The ViLU strategies train ViLU each round on the labelled
    items' correctness under the current head; with fewer than ``vilu_min_labels`` labels (or
    one correctness class) the failure probability falls back to 1 − max softmax probability.
    """

    rounds: int = 5
    select: SelectConfig = field(default_factory=lambda: SelectConfig(budget=50))
    val_split: str | None = "val"
    test_split: str | None = "test"
    posterior_split: str | None = "train"
    posterior_domains: list[str] | None = None
    predictive: Predictive = Predictive.PROBIT
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)
    vilu: ViLUConfig = field(default_factory=ViLUConfig)
    vilu_min_labels: int = 20

    _constraints = {
        "rounds": [Interval(0, None, integer=True)],
        "select": [SelectConfig],
        "val_split": [None, str],
        "test_split": [None, str],
        "posterior_split": [None, str],
        "posterior_domains": [None, list],
        "predictive": [Predictive],
        "finetune": [FinetuneConfig],
        "refit": [RefitConfig],
        "vilu": [ViLUConfig],
        "vilu_min_labels": [Interval(1, None, integer=True)],
    }

    def __post_init__(self) -> None:
        check_constraints(self)

    @property
    def target_domain(self) -> str | None:
        return self.select.target_domain

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, raw: dict | None) -> LoopConfig:
        """Build from plain data (YAML/JSON); unknown fields are errors naming them. Options
        not given keep the loop's defaults (e.g. ``select.budget`` 50, not ``select``'s 500)."""
        if raw is not None and not isinstance(raw, dict):
            raise ValueError(f"loop options must be a mapping, got {raw!r}")
        return config_from_dict(cls, deep_merge(config_to_dict(cls()), raw), "loop")
