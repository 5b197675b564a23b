"""Acquisition heuristics: per-draw class probabilities -> one score per input.

A heuristic maps ``probs [K, N, C]`` (class probabilities of N inputs under K joint posterior
draws; K = 1 for a deterministic model) to ``scores [N]``; a higher score is acquired first.
Heuristics are registered by name (baal-style) so that configs and the CLI can refer to them:

    >>> get_heuristic("bald")(probs)                      # [N]
    >>> get_heuristic("epig")(probs, target_probs=t)      # t [K, M, C] from the SAME K draws

A heuristic registered with ``per_input=True`` reads only each input's own ``[K, C]``
probabilities, so draws exact per input (``MarginalDraws``, far cheaper than weight draws)
give it scores of exactly the same law; EPIG reads the joint of pool and target inputs.

Some heuristics need more than ``probs``; each declares what in ``requires``:
``target_probs`` (EPIG), ``generator`` (random), ``external_scores`` (ViLU failure
probabilities computed elsewhere). Those with ``uses_probs=False`` only read
``N = probs.shape[1]``, so callers may pass ``torch.empty(0, N, 0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from activevlm.acquisition.entropy import entropy
from activevlm.acquisition.epig import epig_scores

EXTRA_INPUTS = ("target_probs", "generator", "external_scores")


@dataclass(frozen=True)
class Heuristic:
    """A named scoring rule ``fn(probs [K, N, C], **requires) -> scores [N]``; ``per_input``:
    the score of input i reads only ``probs[:, i]``."""

    name: str
    fn: Callable[..., torch.Tensor]
    requires: tuple[str, ...] = ()
    uses_probs: bool = True
    per_input: bool = False

    def __call__(
        self,
        probs: torch.Tensor,
        *,
        target_probs: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        external_scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if probs.ndim != 3:
            raise ValueError(
                f"heuristic {self.name!r}: probs must be [K, N, C], got {list(probs.shape)}"
            )
        given = {"target_probs": target_probs, "generator": generator,
                 "external_scores": external_scores}
        kwargs = {}
        for key in self.requires:
            if given[key] is None:
                raise ValueError(f"heuristic {self.name!r} needs {key}=...")
            kwargs[key] = given[key]
        return self.fn(probs, **kwargs)


_REGISTRY: dict[str, Heuristic] = {}


def register_heuristic(
    name: str, *, requires: tuple[str, ...] = (), uses_probs: bool = True,
    per_input: bool = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register ``fn(probs, **requires) -> scores [N]`` under ``name``
    (``per_input``: see :class:`Heuristic`)."""
    unknown = set(requires) - set(EXTRA_INPUTS)
    if unknown:
        raise ValueError(f"unknown heuristic inputs {sorted(unknown)}; known: {EXTRA_INPUTS}")

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise ValueError(f"heuristic {name!r} is already registered")
        _REGISTRY[name] = Heuristic(name, fn, tuple(requires), uses_probs, per_input)
        return fn

    return deco


def get_heuristic(name: str | Heuristic) -> Heuristic:
    """The registered heuristic called ``name`` (a :class:`Heuristic` is returned as is)."""
    if isinstance(name, Heuristic):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown acquisition heuristic {name!r}; available: {', '.join(list_heuristics())}"
        ) from None


def list_heuristics() -> list[str]:
    """Names of all registered heuristics, sorted."""
    return sorted(_REGISTRY)


@register_heuristic("random", requires=("generator",), uses_probs=False)
def random_scores(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores in [0, 1) from ``generator`` (seeded by the caller): ``[N]``."""
    n = probs.shape[1]
    return torch.rand(n, generator=generator, device=generator.device).to(probs.device)


@register_heuristic("entropy", per_input=True)
def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``H[p̄(y|x)]`` with ``p̄`` the mean over draws (MAP entropy when K = 1): ``[N]``."""
    return entropy(probs.mean(0))


@register_heuristic("margin", per_input=True)
def margin(probs: torch.Tensor) -> torch.Tensor:
    """``1 - (p̄₁ - p̄₂)`` of the two largest mean class probabilities: smallest margin first."""
    if probs.shape[-1] < 2:
        raise ValueError(f"margin needs at least 2 classes, got C = {probs.shape[-1]}")
    top2 = probs.mean(0).topk(2, dim=-1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


@register_heuristic("bald", per_input=True)
def bald(probs: torch.Tensor) -> torch.Tensor:
    """Mutual information ``H[p̄] - (1/K) Σ_k H[p_k]`` between label and weights: ``[N]``."""
    return (entropy(probs.mean(0)) - entropy(probs).mean(0)).clamp_min(0.0)


@register_heuristic("epig", requires=("target_probs",))
def epig(probs: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Expected predictive information gain about ``target_probs [K, M, C]``: ``[N]``."""
    return epig_scores(probs, target_probs)


@register_heuristic("vilu", requires=("external_scores",), uses_probs=False)
def vilu(probs: torch.Tensor, external_scores: torch.Tensor) -> torch.Tensor:
    """Precomputed ViLU failure probabilities ``[N]`` in [0, 1], passed through as scores."""
    n = probs.shape[1]
    s = torch.as_tensor(external_scores)
    if s.shape != (n,):
        raise ValueError(f"vilu: external_scores must have shape [{n}], got {list(s.shape)}")
    if torch.isnan(s).any() or (s < 0).any() or (s > 1).any():
        raise ValueError("vilu: external_scores must be failure probabilities in [0, 1]")
    return s.to(probs.device)
