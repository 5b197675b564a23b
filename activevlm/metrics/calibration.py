"""Classification and calibration metrics (MATH.md section 5).

Every function takes class probabilities ``probs [N, C]`` (rows sum to one; numpy array or
torch tensor) and integer labels ``labels [N]`` in ``[0, C)``. The predicted class is the
arg-max and the confidence its probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from activevlm.utils.tensors import to_numpy
from activevlm.utils.validation import check_finite, check_labels, check_nonempty, check_shape

N_BINS = 20
NLL_CLAMP = 1e-12


def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """``probs [N, C]`` and ``labels [N]`` (numpy or torch) as float64 / int64 numpy."""
    p = np.asarray(to_numpy(probs), dtype=np.float64)
    y = to_numpy(labels)
    n, num_classes = check_shape(p, "probs", ("N", "C"))
    check_nonempty(p, "probs", "at least one sample")
    check_labels(y, "labels", num_classes, n)
    check_finite(p, "probs")
    return p, y.astype(np.int64)


def accuracy(probs, labels) -> float:
    """Fraction of samples whose arg-max class is the label."""
    p, y = _check(probs, labels)
    return float((p.argmax(1) == y).mean())


def nll(probs, labels, clamp: float = NLL_CLAMP) -> float:
    """Negative log-likelihood ``-mean log p(y|x)``, probabilities clamped below at ``clamp``."""
    p, y = _check(probs, labels)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], clamp, None)).mean())


def brier(probs, labels) -> float:
    """Multi-class Brier score: ``mean_n sum_c (p_nc - 1[y_n = c])²`` (range [0, 2])."""
    p, y = _check(probs, labels)
    err = p.copy()
    err[np.arange(len(y)), y] -= 1.0
    return float((err**2).sum(1).mean())


def reliability_curve(probs, labels, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per-bin statistics of the max probability, ``n_bins`` equal-width bins on [0, 1].

    Bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (bin 0 also holds 0).
    Columns: ``bin_lower``, ``bin_upper``, ``count``, ``confidence`` (mean max-probability),
    ``accuracy`` (mean correctness); the last two are NaN for empty bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check(probs, labels)
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    edges = np.arange(n_bins + 1) / n_bins  # b / n_bins exactly rounded (linspace is not)
    # bin b = (edges[b], edges[b + 1]]; ceil(conf * n_bins) would misplace exact edges such as
    # 0.15, whose product with 20 rounds up to 3.0000000000000004
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(b, weights=correct, minlength=n_bins) / count
    return pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": mean_acc})


def ece(probs, labels, n_bins: int = N_BINS) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width bins."""
    curve = reliability_curve(probs, labels, n_bins)
    full = curve[curve["count"] > 0]
    w = full["count"].to_numpy() / full["count"].sum()
    return float((w * (full["accuracy"] - full["confidence"]).abs().to_numpy()).sum())


def calibration_summary(probs, labels, n_bins: int = N_BINS) -> dict[str, float]:
    """``{"n", "accuracy", "nll", "ece", "brier"}`` for one set of predictions."""
    p, y = _check(probs, labels)
    return {"n": len(y), "accuracy": accuracy(p, y), "nll": nll(p, y),
            "ece": ece(p, y, n_bins), "brier": brier(p, y)}
