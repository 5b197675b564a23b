"""Batch-aware EPIG and BALD: greedy selection with label-free conditioning on each pick.

Repeat ``budget`` times: score the L candidates under the current joint draws (EPIG against
the M target draws, which move too), take the best candidate not yet taken, and condition the
posterior on it (:class:`~activevlm.acquisition.conditioning.PathwiseConditioning`, MATH.md
§6). Candidates are a prefiltered set (e.g. the best few × budget rows of a one-pass score).

Cost. Re-scoring all L candidates at every pick costs ``budget·L·M·C²·K`` for EPIG, i.e.
``budget·L/N`` one-pass scores of an N-item pool (5–20× at N = 10⁵, budget 500, L = 2000).
By default the selection is **lazy** (Minoux's accelerated greedy): each candidate keeps the
score of its last evaluation as a bound, only the ``block`` candidates with the highest bounds
are re-scored, and a candidate is taken once its fresh score is at least every other bound.
The per-pick work is then the rank-one update of all ``L + M`` tracked embeddings
(``K·(L+M)·D``), the M target probabilities (``K·M·C·D``) and a few ``block``-sized EPIG
evaluations.

Why the bounds hold (approximately). Conditioning only shrinks the posterior:
``Ã'⁻¹ ⪯ Ã⁻¹``, so every embedding has less variance after a pick, and the draws'
disagreement that BALD and EPIG measure mostly shrinks with it. The scores are not monotone,
though: normalisation and the softmax bend the picture, and EPIG's targets move too, so a
candidate's score can rise after a pick. The rise is small when a pick teaches little
(``c·v ≪ 1``: one label against a posterior fitted on much data), where lazy and exact greedy
take the same batch (tests); under strong conditioning (``c·v`` ~ 5-30 on the test toy) EPIG
scores can double, and ``slack`` > 1 (stale bounds multiplied by ``slack`` before they are
compared with fresh scores) buys back exactness for more evaluations: ``slack=2`` reproduced
exact greedy there. ``lazy=False`` re-scores every candidate at every pick (exact greedy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from activevlm.acquisition.conditioning import PathwiseConditioning, Pick
from activevlm.acquisition.epig import epig_scores
from activevlm.acquisition.heuristics import get_heuristic
from activevlm.bayes.draws import JointDraws
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import to_tensor

GREEDY_HEURISTICS = ("epig", "bald")


@dataclass
class GreedyBatch:
    """``positions [budget]`` (int64 rows of the candidate array, in pick order), ``gains
    [budget]`` (the pick's score when taken, float64), ``picks`` (conditioning steps: ``c``,
    ``v``, ``β``), ``evaluations`` (candidate scorings in total, initial pass included)."""

    positions: np.ndarray
    gains: np.ndarray
    picks: list[Pick] = field(default_factory=list)
    evaluations: int = 0


def greedy_batch(
    posterior,
    text_act,
    cand_act,
    budget: int,
    *,
    heuristic: Literal["epig", "bald"] = "epig",
    target_act=None,
    cand_residual=None,
    target_residual=None,
    n_draws: int = 100,
    generator: torch.Generator,
    lazy: bool = True,
    slack: float = 1.0,
    block: int = 16,
    loss: str | None = None,
    device: str | torch.device | None = "auto",
) -> GreedyBatch:
    """Greedy batch of ``budget`` candidates by EPIG or BALD with label-free conditioning.

    ``posterior``: a ``BayesVLMPosterior``; ``text_act [C, d_txt]`` class prompt activations;
    ``cand_act [L, d_img]`` candidate activations (+ ``cand_residual [L, D]`` for SigLIP);
    EPIG needs ``target_act [M, d_img]`` (+ ``target_residual``), a sample of the target
    distribution (a few hundred suffice: the cost per pick is linear in M). ``n_draws`` K
    joint draws come from ``generator`` (CPU; same seed -> same batch on any device).
    ``device="auto"``: CUDA when present, else CPU. ``lazy``/``slack``/``block``: see the
    module docstring (``block`` candidates are re-scored at once). Memory: ``K·(L+M)·D``
    floats of tracked embeddings.
    """
    if heuristic not in GREEDY_HEURISTICS:
        raise ValueError(f"greedy selection supports {GREEDY_HEURISTICS}, got {heuristic!r}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if slack < 1:
        raise ValueError(f"slack must be >= 1, got {slack}")
    n_cand = cand_act.shape[0]
    if not 0 <= budget <= n_cand:
        raise ValueError(f"budget must lie in [0, {n_cand}] (the number of candidates), "
                         f"got {budget}")
    is_epig = heuristic == "epig"
    if is_epig and (target_act is None or target_act.shape[0] == 0):
        raise ValueError("greedy EPIG needs a non-empty target_act [M, d_img]")
    if not is_epig and target_act is not None:
        raise ValueError("target_act is only used by greedy EPIG, not BALD")
    dev = resolve_device(device)
    draws = JointDraws.from_posterior(posterior, text_act, n_draws, generator, device=dev)
    act = to_tensor(cand_act, dev, draws.dtype)
    residual = None if cand_residual is None else to_tensor(cand_residual, dev, draws.dtype)
    if is_epig:
        act = torch.cat([act, to_tensor(target_act, dev, draws.dtype)])
        if (cand_residual is None) != (target_residual is None):
            raise ValueError("give residuals for both candidates and targets, or for neither")
        if residual is not None:
            residual = torch.cat([residual, to_tensor(target_residual, dev, draws.dtype)])
    state = PathwiseConditioning(posterior, draws, text_act, act, residual, loss=loss)
    targets = torch.arange(n_cand, state.num_tracked, device=dev)
    bald = get_heuristic("bald")
    target_probs: list[torch.Tensor] = []  # cached for the current pick

    def score(rows: np.ndarray) -> np.ndarray:
        probs = state.probs(torch.from_numpy(rows).to(dev))
        if is_epig:
            if not target_probs:
                target_probs.append(state.probs(targets))
            s = epig_scores(probs, target_probs[0])
        else:
            s = bald(probs)
        return s.double().cpu().numpy()

    bound = score(np.arange(n_cand))
    evaluations = n_cand
    fresh = np.ones(n_cand, dtype=bool)  # bound is the score under the current state
    taken = np.zeros(n_cand, dtype=bool)
    positions, gains = [], []
    for _ in range(budget):
        while True:
            masked = np.where(taken, -np.inf, np.where(fresh, bound, slack * bound))
            best = int(np.argmax(masked))
            if fresh[best]:
                break
            stale = np.flatnonzero(~fresh & ~taken)
            if lazy:  # re-score only the highest bounds
                stale = stale[np.argsort(-masked[stale], kind="stable")[:block]]
            bound[stale] = score(stale)
            fresh[stale] = True
            evaluations += len(stale)
        positions.append(best)
        gains.append(bound[best])
        taken[best] = True
        state.condition(best)
        fresh[:] = False
        target_probs.clear()
    return GreedyBatch(np.asarray(positions, dtype=np.int64), np.asarray(gains, dtype=np.float64),
                       list(state.picks), evaluations)
