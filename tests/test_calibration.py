"""Calibration metrics against hand-computed values, brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss

from activevlm.metrics import (
    accuracy,
    brier,
    calibration_summary,
    ece,
    nll,
    reliability_curve,
)


def _random(n=500, c=7, seed=0):
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, c))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, c, size=n)
    return p, y


def test_hand_computed_example():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 2, 1, 2])
    assert accuracy(p, y) == 0.5
    assert nll(p, y) == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.4)
                                        + np.log(0.6)) / 4)
    brier_rows = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.6**2 + 0.7**2,
                  0.5**2 + 0.6**2 + 0.1**2, 0.2**2 + 0.2**2 + 0.4**2]
    assert brier(p, y) == pytest.approx(np.mean(brier_rows))
    # 20 bins of width 0.05: confidences 0.7, 0.6, 0.5, 0.6 -> bins (0.65,0.7], (0.55,0.6] x2,
    # (0.45,0.5]; accuracies 1, {0, 1}, 0
    expected = (1 * abs(1 - 0.7) + 2 * abs(0.5 - 0.6) + 1 * abs(0 - 0.5)) / 4
    assert ece(p, y) == pytest.approx(expected)


def test_against_sklearn_and_brute_force():
    p, y = _random()
    assert accuracy(p, y) == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=np.arange(p.shape[1])), rel=1e-9)
    onehot = np.eye(p.shape[1])[y]
    assert brier(p, y) == pytest.approx(((p - onehot) ** 2).sum(1).mean())
    conf, correct = p.max(1), p.argmax(1) == y
    total = 0.0
    for b in range(20):
        lo, hi = b / 20, (b + 1) / 20
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs(correct[m].mean() - conf[m].mean())
    assert ece(p, y) == pytest.approx(total)


def test_confidences_at_bin_edges_follow_the_b_over_n_rule():
    # bin b is (b/n, (b+1)/n] with b/n correctly rounded; ceil(conf·n) misplaces e.g. 0.14 with
    # n = 50 (0.14·50 rounds up to 7.000000000000001) and the float just above 0.85 with n = 20
    for n_bins, conf in [(50, 0.14), (50, 0.28), (20, np.nextafter(0.85, 1.0)), (20, 0.15),
                         (20, 1.0), (15, np.nextafter(11 / 15, 1.0))]:
        curve = reliability_curve(np.array([[conf, 0.0]]), np.array([0]), n_bins=n_bins)
        b = int(np.flatnonzero(curve["count"].to_numpy())[0])
        assert b / n_bins < conf <= (b + 1) / n_bins, (n_bins, conf, b)
        assert curve["bin_upper"][b] == (b + 1) / n_bins


def test_reliability_curve_columns_and_counts():
    p, y = _random(n=300, seed=1)
    curve = reliability_curve(p, y, n_bins=20)
    assert list(curve.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    assert len(curve) == 20 and curve["count"].sum() == 300
    full = curve[curve["count"] > 0]
    assert (full["confidence"] > full["bin_lower"]).all()
    assert (full["confidence"] <= full["bin_upper"]).all()
    assert curve.loc[curve["count"] == 0, "accuracy"].isna().all()
    # max-probability is at least 1/C, so bins below 1/7 are empty
    assert curve.loc[curve["bin_upper"] <= 1 / 7, "count"].sum() == 0


def test_labels_drawn_from_probs_are_nearly_calibrated():
    rng = np.random.default_rng(5)
    p, _ = _random(n=20_000, c=4, seed=5)
    y = (rng.random(len(p))[:, None] > p.cumsum(1)).sum(1)
    assert ece(p, y) < 0.02  # calibrated by construction: only sampling noise remains
    p_sharp = p**3 / (p**3).sum(1, keepdims=True)
    assert ece(p_sharp, y) > 0.1  # sharpened probabilities are over-confident


def test_perfect_and_calibrated_cases():
    y = np.array([0, 1, 2, 1])
    onehot = np.eye(3)[y]
    s = calibration_summary(onehot, y)
    assert s == pytest.approx({"n": 4, "accuracy": 1.0, "nll": 0.0, "ece": 0.0, "brier": 0.0})
    # confidence 0.75 everywhere, right 3 times in 4: perfectly calibrated
    p = np.array([[0.75, 0.25]] * 4)
    assert ece(p, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # NLL clamps zero probabilities instead of returning inf
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-np.log(1e-12))


def test_torch_inputs_and_errors():
    p, y = _random(n=50, seed=2)
    assert ece(torch.from_numpy(p), torch.from_numpy(y)) == pytest.approx(ece(p, y))
    with pytest.raises(ValueError, match="labels must lie"):
        accuracy(p, np.full(50, 7))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        nll(p[:, 0], y)
    with pytest.raises(ValueError, match="integers"):
        brier(p, y.astype(float))
