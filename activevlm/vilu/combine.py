"""Combining ViLU failure probabilities with EPIG scores for acquisition.

Two documented ways, both ``[N] -> [N]`` and usable as precomputed scores:

- ``failure_weighted``: ``EPIG · p_fail^γ`` — informative items that the current model
  probably gets wrong; stays non-negative, so every batch-selection rule (top-k, softmax or
  power sampling, class-balanced, targeted) applies.
- EPIG within the most likely failures: the ``fraction`` of items with the highest failure
  probability are the only candidates. With ``acquisition.batch.select_batch`` pass EPIG
  unchanged and ``exclude=~top_failure_mask(p_fail, fraction)`` (works with every strategy,
  including power sampling, which needs non-negative scores); ``within_top_failures`` gives
  the same as one score array (EPIG there, ``-inf`` elsewhere) for plain ranking.
"""

from __future__ import annotations

import math

import numpy as np

from activevlm.utils.validation import check_shape


def _pair(epig_scores, failure_prob) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(epig_scores, dtype=np.float64)
    p = np.asarray(failure_prob, dtype=np.float64)
    n = check_shape(e, "epig_scores", ("N",))[0]
    check_shape(p, "failure_prob", (n,), " (one per epig score)")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("failure_prob must be probabilities in [0, 1]")
    return e, p


def failure_weighted(epig_scores, failure_prob, power: float = 1.0) -> np.ndarray:
    """``epig · failure_prob ** power`` ``[N]``; ``power = 0`` gives EPIG back."""
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    e, p = _pair(epig_scores, failure_prob)
    return e * p**power


def top_failure_mask(failure_prob, fraction: float) -> np.ndarray:
    """Bool ``[N]``: the ``ceil(fraction · N)`` items most likely to fail (ties: lower index)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    p = np.asarray(failure_prob, dtype=np.float64)
    k = math.ceil(fraction * p.size)
    mask = np.zeros(p.size, dtype=bool)
    mask[np.argsort(-p, kind="stable")[:k]] = True
    return mask


def within_top_failures(epig_scores, failure_prob, fraction: float) -> np.ndarray:
    """EPIG ``[N]`` on the ``fraction`` most likely failures, ``-inf`` elsewhere."""
    e, p = _pair(epig_scores, failure_prob)
    return np.where(top_failure_mask(p, fraction), e, -np.inf)
