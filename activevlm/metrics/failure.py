"""Failure-prediction metrics and baseline confidence functions (MATH.md section 4).

Convention: ``correct [N]`` is True where the model's prediction was right, and a
*confidence* ``[N]`` is higher for predictions believed right. AUROC and FPR@95TPR treat
correct predictions as positives; AUPR-Error treats failures as positives with score
``-confidence``. Every metric is invariant to how tied confidences are broken.
"""

from __future__ import annotations

import numpy as np

from activevlm.utils.validation import (
    check_finite,
    check_labels,
    check_same_length,
    check_shape,
)

# ---------------------------------------------------------------------------------------------
# metrics


def _check(correct, confidence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(correct)
    s = np.asarray(confidence, dtype=np.float64)
    check_shape(y, "correct", ("N",))
    check_shape(s, "confidence", ("N",))
    check_same_length(correct=y, confidence=s)
    check_finite(s, "confidence")
    return y.astype(bool), s


def _need_both(y: np.ndarray, metric: str) -> None:
    if y.all() or not y.any():
        raise ValueError(
            f"{metric} needs both correct and wrong predictions; got {int(y.sum())} correct "
            f"of {y.size}"
        )


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) counts at each distinct threshold, highest first, plus thresholds."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_block = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), y.size - 1]
    tp = np.cumsum(y_sorted)[last_of_block]
    fp = (last_of_block + 1) - tp
    return tp, fp, s_sorted[last_of_block]


def auroc(correct, confidence) -> float:
    """Area under the ROC curve, correct predictions positive (ties count one half)."""
    y, s = _check(correct, confidence)
    _need_both(y, "AUROC")
    tp, fp, _ = _roc_points(y, s)
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def fpr_at_tpr(correct, confidence, tpr: float = 0.95) -> float:
    """False-positive rate (wrong predictions accepted) at the first threshold, going down,
    where the true-positive rate (correct predictions accepted) reaches ``tpr``."""
    y, s = _check(correct, confidence)
    _need_both(y, "FPR@TPR")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    tp, fp, _ = _roc_points(y, s)
    k = int(np.argmax(tp / tp[-1] >= tpr - 1e-12))
    return float(fp[k] / fp[-1])


def aupr_error(correct, confidence) -> float:
    """Average precision with failures as positives and ``-confidence`` as their score
    (step-wise sum ``Σ (R_k − R_{k−1}) P_k`` over distinct thresholds, as scikit-learn)."""
    y, s = _check(correct, confidence)
    _need_both(y, "AUPR-Error")
    tp, fp, _ = _roc_points(~y, -s)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def risk_coverage_curve(correct, confidence) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``k/N`` and selective risk (error rate among the ``k`` most confident), ``[N]``
    each, for ``k = 1..N``. Within a block of tied confidences the errors are spread evenly,
    which is the expectation over random tie-breaking."""
    y, s = _check(correct, confidence)
    n = y.size
    if n == 0:
        raise ValueError("risk-coverage curve of an empty set")
    order = np.argsort(-s, kind="stable")
    s_sorted, err_sorted = s[order], (~y[order]).astype(np.float64)
    block_end = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), n - 1]
    block_start = np.r_[0, block_end[:-1] + 1]
    errs_before = np.r_[0.0, np.cumsum(err_sorted)[block_end][:-1]]
    block_rate = (np.cumsum(err_sorted)[block_end] - errs_before) / (block_end - block_start + 1)
    block_of = np.repeat(np.arange(block_end.size), block_end - block_start + 1)
    k = np.arange(1, n + 1)
    errors = errs_before[block_of] + (k - block_start[block_of]) * block_rate[block_of]
    return k / n, errors / k


def aurc(correct, confidence) -> float:
    """Area under the risk–coverage curve: the mean selective risk over ``k = 1..N``."""
    _, risk = risk_coverage_curve(correct, confidence)
    return float(risk.mean())


FAILURE_METRICS = {
    "auroc": auroc,
    "fpr_at_95tpr": fpr_at_tpr,
    "aupr_error": aupr_error,
    "aurc": aurc,
}


# ---------------------------------------------------------------------------------------------
# baseline confidences (higher = more confident)


def _probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    check_shape(p, "probs", ("N", "C"))
    return p


def msp(probs) -> np.ndarray:
    """Maximum softmax probability ``max_c p_c``: ``[N, C] -> [N]``."""
    return _probs(probs).max(axis=1)


def negative_entropy(probs) -> np.ndarray:
    """``Σ_c p_c log p_c`` (0 log 0 = 0): ``[N, C] -> [N]``."""
    p = _probs(probs)
    return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def doctor(probs) -> np.ndarray:
    """DOCTOR (Granese et al. 2021) as a confidence: ``−(1 − Σp²)/Σp² = 1 − 1/Σp²``, ``[N]``."""
    g = np.sum(_probs(probs) ** 2, axis=1)
    return -(1.0 - g) / g


def predictive_variance_confidence(logit_var, predicted) -> np.ndarray:
    """BayesVLM baseline: ``−Var[logit]`` of each item's predicted class.

    ``logit_var [N, C]`` (e.g. from ``activevlm.bayes.probcosine.logit_moments``),
    ``predicted [N]`` class indices -> ``[N]``.
    """
    v = np.asarray(logit_var, dtype=np.float64)
    c = np.asarray(predicted, dtype=np.int64)
    n, num_classes = check_shape(v, "logit_var", ("N", "C"))
    check_labels(c, "predicted", num_classes, n)
    return -v[np.arange(v.shape[0]), c]


def baseline_confidences(probs, logit_var=None) -> dict[str, np.ndarray]:
    """MSP, negative entropy and DOCTOR from ``probs [N, C]``; with ``logit_var [N, C]`` also
    the BayesVLM predictive variance of the predicted class (``argmax probs``)."""
    out = {"msp": msp(probs), "entropy": negative_entropy(probs), "doctor": doctor(probs)}
    if logit_var is not None:
        out["bayesvlm_variance"] = predictive_variance_confidence(
            logit_var, _probs(probs).argmax(axis=1)
        )
    return out
