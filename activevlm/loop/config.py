"""``LoopConfig``: one simulated active-learning campaign (strategy, rounds, protocol splits)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from activevlm.finetune import FinetuneConfig, RefitConfig
from activevlm.runs.select import STRATEGIES, SelectConfig
from activevlm.vilu.model import ViLUConfig

TARGETED_SUFFIX = "-targeted"


def parse_strategy(name: str) -> tuple[str, bool]:
    """``"entropy-targeted"`` -> ``("entropy", True)``; ``"epig"`` -> ``("epig", False)``."""
    targeted = name.endswith(TARGETED_SUFFIX)
    base = name[: -len(TARGETED_SUFFIX)] if targeted else name
    if base not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}, "
                         f"optionally with the suffix {TARGETED_SUFFIX!r}")
    return base, targeted


@dataclass
class LoopConfig:
    """A simulated-oracle loop following the BayesVLM active-learning protocol.

    Each of ``rounds`` rounds queues ``budget`` items of ``pool_split`` (all domains), labels
    them from the dataset, fine-tunes the pool's head on all labels so far (early stopping on
    the labelled ``val_split`` of ``target_domain``), refits the posterior (``refit.mode``:
    "none" | "recentre" | "recentre+update") and evaluates on ``test_split`` of
    ``target_domain`` (None = every domain). ``strategy``: a selection strategy, optionally
    with ``-targeted`` (score the target inputs, queue their nearest pool neighbours).
    ``select`` holds the other selection options (draws, EPIG targets, batch rule); its
    budget/strategy/target fields are overridden by this config. The base posterior is
    fitted on ``posterior_split``/``posterior_domains`` unless one is given to ``run_loop``.
    ``vilu``/``vilu+epig`` train ViLU each round on the labelled items' correctness under the
    current head; with fewer than ``vilu_min_labels`` labels (or one correctness class) the
    failure probability falls back to 1 − max softmax probability.
    """

    strategy: str = "epig"
    rounds: int = 5
    budget: int = 50
    target_domain: str | None = None
    pool_split: str | None = "train"
    target_split: str | None = "val"
    val_split: str | None = "val"
    test_split: str | None = "test"
    posterior_split: str | None = "train"
    posterior_domains: list[str] | None = None
    predictive: str = "probit"
    select: SelectConfig = field(default_factory=SelectConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)
    vilu: ViLUConfig = field(default_factory=ViLUConfig)
    vilu_min_labels: int = 20

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        if self.rounds < 0 or self.budget < 1:
            raise ValueError(f"LoopConfig needs rounds >= 0 and budget >= 1, got rounds="
                             f"{self.rounds}, budget={self.budget}")
        if self.predictive not in ("probit", "mc"):
            raise ValueError(f"LoopConfig.predictive must be 'probit' or 'mc', "
                             f"got {self.predictive!r}")

    @property
    def base_strategy(self) -> str:
        return parse_strategy(self.strategy)[0]

    @property
    def targeted(self) -> bool:
        return parse_strategy(self.strategy)[1]

    def select_config(self, seed: int) -> SelectConfig:
        """The per-round selection options, seeded by the loop's ``seed``."""
        return dataclasses.replace(
            self.select, budget=self.budget, strategy=self.base_strategy,
            targeted=self.targeted, target_domain=self.target_domain,
            target_split=self.target_split, pool_split=self.pool_split, seed=seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> LoopConfig:
        """Build from plain data (YAML/JSON); unknown fields are errors naming them."""
        nested = {"select": SelectConfig, "finetune": FinetuneConfig, "refit": RefitConfig,
                  "vilu": ViLUConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown loop option(s) {unknown}; known: {sorted(known)}")
        values = dict(raw)
        defaults = cls()
        for name, kind in nested.items():
            if name not in values:
                continue
            sub = values[name] or {}
            fields = {f.name for f in dataclasses.fields(kind)}
            bad = sorted(set(sub) - fields)
            if bad:
                raise ValueError(f"unknown {name} option(s) {bad}; known: {sorted(fields)}")
            values[name] = dataclasses.replace(getattr(defaults, name), **sub)
        return cls(**values)
