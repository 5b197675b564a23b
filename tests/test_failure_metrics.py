"""Failure-prediction metrics against scikit-learn and brute force; baseline confidences."""

import itertools

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from activevlm.metrics.failure import (
    aupr_error,
    aurc,
    auroc,
    baseline_confidences,
    doctor,
    fpr_at_tpr,
    msp,
    negative_entropy,
    predictive_variance_confidence,
    risk_coverage_curve,
)


def _cases():
    """(correct, confidence) pairs: continuous scores, heavy ties, imbalanced."""
    rng = np.random.default_rng(0)
    out = []
    for n, p_correct, decimals in [(200, 0.7, None), (300, 0.5, 1), (150, 0.9, 2), (60, 0.2, 0)]:
        y = rng.random(n) < p_correct
        s = rng.normal(size=n) + 1.2 * y
        if decimals is not None:
            s = np.round(s, decimals)
        out.append((y, s))
    return out


@pytest.mark.parametrize("case", range(4))
def test_auroc_matches_sklearn(case):
    y, s = _cases()[case]
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("case", range(4))
def test_fpr_at_95tpr_matches_sklearn_roc_curve(case):
    y, s = _cases()[case]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert fpr_at_tpr(y, s) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("case", range(4))
def test_aupr_error_matches_sklearn_average_precision(case):
    y, s = _cases()[case]
    assert aupr_error(y, s) == pytest.approx(average_precision_score(~y, -s), abs=1e-12)


def test_metrics_on_hand_worked_example():
    # confidences high -> low: correct, wrong, correct, wrong
    y = np.array([True, False, True, False])
    s = np.array([4.0, 3.0, 2.0, 1.0])
    assert auroc(y, s) == pytest.approx(0.75)  # 3 of 4 (correct, wrong) pairs ordered
    assert fpr_at_tpr(y, s) == pytest.approx(0.5)  # TPR reaches 1 after 3 items: 1 of 2 wrong
    # failures ranked by -s: wrong(1), correct(2), wrong(3), correct(4): AP = (1 + 2/3) / 2
    assert aupr_error(y, s) == pytest.approx((1 + 2 / 3) / 2)
    coverage, risk = risk_coverage_curve(y, s)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 1 / 2, 1 / 3, 2 / 4])
    assert aurc(y, s) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def _aurc_brute_force(y, s):
    """Mean over every tie-breaking order of the mean selective risk."""
    values = []
    for perm in itertools.permutations(range(y.size)):
        perm = np.array(perm)
        if np.any(np.diff(s[perm]) > 0):  # keep only orders sorted by decreasing confidence
            continue
        errors = np.cumsum(~y[perm])
        values.append(np.mean(errors / np.arange(1, y.size + 1)))
    return np.mean(values)


def test_aurc_is_the_expectation_over_tie_breaking():
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.random(7) < 0.5
        s = rng.integers(0, 3, size=7).astype(float)  # many ties
        assert aurc(y, s) == pytest.approx(_aurc_brute_force(y, s), abs=1e-12)


def test_perfect_and_reversed_confidence():
    y = np.array([True] * 6 + [False] * 4)
    s = np.linspace(1, 0, 10)
    assert auroc(y, s) == 1.0 and fpr_at_tpr(y, s) == 0.0 and aupr_error(y, s) == 1.0
    assert auroc(y, -s) == 0.0 and fpr_at_tpr(y, -s) == 1.0
    # optimal AURC: zero risk until coverage 0.6, then errors accumulate
    expected = np.mean([max(0, k - 6) / k for k in range(1, 11)])
    assert aurc(y, s) == pytest.approx(expected)


def test_metrics_need_both_outcomes_and_matching_shapes():
    with pytest.raises(ValueError, match="both correct and wrong"):
        auroc(np.ones(5, bool), np.arange(5.0))
    with pytest.raises(ValueError, match="same length"):
        aupr_error(np.ones(5, bool), np.arange(4.0))
    with pytest.raises(ValueError, match="NaN"):
        fpr_at_tpr(np.array([True, False]), np.array([np.nan, 1.0]))


def test_baseline_confidences():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(5), size=50)
    np.testing.assert_allclose(msp(p), p.max(1))
    np.testing.assert_allclose(negative_entropy(p), -scipy_entropy(p, axis=1), atol=1e-12)
    np.testing.assert_allclose(doctor(p), -(1 - (p**2).sum(1)) / (p**2).sum(1))
    # higher = more confident: a one-hot prediction beats a uniform one for every baseline
    sharp, flat = np.eye(5)[:1], np.full((1, 5), 0.2)
    for fn in (msp, negative_entropy, doctor):
        assert fn(sharp)[0] > fn(flat)[0]
    assert doctor(sharp)[0] == 0.0 and doctor(flat)[0] == pytest.approx(-4.0)
    assert negative_entropy(sharp)[0] == 0.0


def test_predictive_variance_confidence_uses_predicted_class():
    var = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_allclose(predictive_variance_confidence(var, [2, 0]), [-3.0, -4.0])
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    conf = baseline_confidences(p, logit_var=var)
    assert set(conf) == {"msp", "entropy", "doctor", "bayesvlm_variance"}
    np.testing.assert_allclose(conf["bayesvlm_variance"], [-2.0, -4.0])
    assert set(baseline_confidences(p)) == {"msp", "entropy", "doctor"}


def test_oracle_risk_coverage_is_the_closed_form():
    """The risk–coverage plot's oracle: all failures ranked last, risk(k) = max(0, k − c)/k."""
    y = np.random.default_rng(3).random(50) < 0.6
    coverage, risk = risk_coverage_curve(y, y.astype(float))
    k, c = np.arange(1, 51), y.sum()
    np.testing.assert_allclose(coverage, k / 50)
    np.testing.assert_allclose(risk, np.maximum(0, k - c) / k, atol=1e-12)
