"""Batch selection: top-k, stochastic (statistical check), exclusions, class balance, dedup."""

from __future__ import annotations

import numpy as np
import pytest

from activevlm.acquisition import balance_by_class, rank_stochastic, select_batch
from activevlm.index import EmbeddingIndex


@pytest.fixture(scope="module")
def scores():
    return np.random.default_rng(0).random(200)


def test_topk_and_exclusions(scores):
    np.testing.assert_array_equal(select_batch(scores, 10), np.argsort(-scores)[:10])
    best = np.argsort(-scores)[:5]
    mask = np.zeros(200, bool)
    mask[best] = True
    expected = np.argsort(-scores)[5:15]
    for exclude in (mask, set(best.tolist()), best.tolist()):
        np.testing.assert_array_equal(select_batch(scores, 10, exclude=exclude), expected)
        picked = select_batch(scores, 30, strategy="stochastic", seed=1, exclude=exclude)
        assert not set(picked.tolist()) & set(best.tolist())
    # asking for more than is left returns what is left
    assert len(select_batch(scores, 500, exclude=best)) == 195
    with pytest.raises(ValueError, match="must lie in \\[0, 200\\)"):
        select_batch(scores, 3, exclude=[200])


def test_stochastic_is_seeded_and_validated(scores):
    a = select_batch(scores, 20, strategy="stochastic", seed=7)
    b = select_batch(scores, 20, strategy="stochastic", seed=7)
    c = select_batch(scores, 20, strategy="stochastic", seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == 20  # without replacement
    with pytest.raises(ValueError, match="explicit seed"):
        select_batch(scores, 5, strategy="stochastic")
    with pytest.raises(ValueError, match="scores >= 0"):
        select_batch(scores - 0.5, 5, strategy="stochastic", seed=0)
    with pytest.raises(ValueError, match="NaN"):
        select_batch(np.array([0.1, np.nan]), 1)
    # softmax mode accepts signed scores
    assert len(select_batch(scores - 0.5, 5, strategy="stochastic", seed=0, mode="softmax")) == 5


def test_zero_weights_come_last_in_random_order():
    s = np.array([0.0, 2.0, 0.0, 1.0, 0.0])
    orders = {tuple(rank_stochastic(s, np.arange(5), seed=i)[2:]) for i in range(50)}
    assert all(set(o) == {0, 2, 4} for o in orders) and len(orders) > 1


@pytest.mark.parametrize(("mode", "beta", "scores"), [
    ("power", 1.0, [1.0, 2.0, 3.0, 4.0]),
    ("power", 2.0, [1.0, 2.0, 3.0, 4.0]),
    ("softmax", 1.0, [-1.0, 0.0, 1.0, 2.0]),
])
def test_sampling_frequencies_match_the_distribution(mode, beta, scores):
    """First pick ~ w / Σw and second pick ~ Σ_i p_i p_j / (1 - p_i) (Plackett–Luce), with
    w = score^β or exp(β·score). Tolerance 4.5 binomial standard deviations over 20 000
    seeded draws (a false alarm has probability < 1e-4 per entry)."""
    s = np.asarray(scores)
    w = s**beta if mode == "power" else np.exp(beta * s)
    p = w / w.sum()
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j)
                       for j in range(4)])
    trials = 20_000
    picks = np.array([rank_stochastic(s, np.arange(4), seed=t, beta=beta, mode=mode)[:2]
                      for t in range(trials)])
    for column, expected in ((0, p), (1, second)):
        freq = np.bincount(picks[:, column], minlength=4) / trials
        tol = 4.5 * np.sqrt(expected * (1 - expected) / trials)
        assert (np.abs(freq - expected) <= tol).all(), (column, freq, expected)


def test_class_balance_round_robin():
    rng = np.random.default_rng(3)
    scores = rng.random(90)
    predicted = np.repeat([0, 1, 2], [60, 25, 5])  # class 0 dominates the top scores too
    scores[:60] += 1.0
    picked = select_batch(scores, 12, predicted_class=predicted)
    counts = np.bincount(predicted[picked], minlength=3)
    np.testing.assert_array_equal(counts, [4, 4, 4])
    # within each class, its best items are taken first
    for c in range(3):
        members = np.flatnonzero(predicted == c)
        best = members[np.argsort(-scores[members])][:4]
        assert set(picked[predicted[picked] == c].tolist()) == set(best.tolist())
    # a class that runs out leaves the others balanced among themselves
    picked = select_batch(scores, 30, predicted_class=predicted)
    np.testing.assert_array_equal(np.bincount(predicted[picked], minlength=3), [13, 12, 5])
    # with stochastic ranking and exclusions
    picked = select_batch(scores, 9, strategy="stochastic", seed=1, predicted_class=predicted,
                          exclude=np.arange(60, 63))
    np.testing.assert_array_equal(np.bincount(predicted[picked], minlength=3), [3, 3, 3])
    assert not set(picked.tolist()) & {60, 61, 62}


def test_class_balance_within_the_best_candidates_only():
    scores = np.linspace(1.0, 0.0, 40)  # row order is score order
    predicted = np.array([0] * 10 + [1] * 10 + [2] * 20)
    # among the best 20 only classes 0 and 1 occur: the batch alternates between them and
    # never reaches class 2, whose best item (row 20) is worse than all of those 20
    picked = select_batch(scores, 8, predicted_class=predicted, balance_within=20)
    np.testing.assert_array_equal(picked, [0, 10, 1, 11, 2, 12, 3, 13])
    everywhere = select_batch(scores, 9, predicted_class=predicted)
    np.testing.assert_array_equal(everywhere, [0, 10, 20, 1, 11, 21, 2, 12, 22])
    # past the shortlist the order is the score order again
    picked = select_batch(scores, 6, predicted_class=predicted, balance_within=4)
    np.testing.assert_array_equal(picked, [0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="balance_within"):
        select_batch(scores, 3, predicted_class=predicted, balance_within=0)


def test_diverse_batch_takes_the_best_of_each_cluster():
    rng = np.random.default_rng(5)
    centres = 10 * np.eye(8, dtype=np.float32)[:4]  # four far-apart clusters of 15 items
    emb = np.repeat(centres, 15, axis=0) + rng.standard_normal((60, 8)).astype(np.float32)
    scores = rng.random(60)
    scores[:15] += 10  # cluster 0 holds every top-15 item: a top-k batch is one cluster
    index = EmbeddingIndex.build(emb, progress=False)
    assert set(select_batch(scores, 4).tolist()) <= set(range(15))
    picked = select_batch(scores, 4, strategy="diverse", seed=0, index=index, prefilter=15)
    best = [c * 15 + int(np.argmax(scores[c * 15:(c + 1) * 15])) for c in range(4)]
    assert sorted(picked.tolist()) == sorted(best)
    np.testing.assert_array_equal(picked, sorted(best, key=lambda i: -scores[i]))
    # the prefilter bounds where clusters are sought: the best 3 x 4 items are all cluster 0
    narrow = select_batch(scores, 4, strategy="diverse", seed=0, index=index, prefilter=3)
    assert set(narrow.tolist()) <= set(range(15))
    # exclusions hold, and past the cluster leaders the order is the score order
    full = select_batch(scores, 10, strategy="diverse", seed=0, index=index, prefilter=15,
                        exclude=[best[1]])
    assert best[1] not in full.tolist() and len(set(full.tolist())) == 10
    rest = full[4:]
    assert (np.diff(scores[rest]) <= 0).all()
    with pytest.raises(ValueError, match="seed and an embedding index"):
        select_batch(scores, 4, strategy="diverse", seed=0)


def test_balance_by_class_prefixes():
    order = np.arange(10)
    cls = np.array([2, 2, 2, 0, 0, 1, 2, 0, 1, 1])
    out = balance_by_class(order, cls)
    np.testing.assert_array_equal(out, [0, 3, 5, 1, 4, 8, 2, 7, 9, 6])


def test_near_duplicates_are_dropped():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((100, 16)).astype(np.float32)
    emb = np.concatenate([base, base[:20] + 1e-3 * rng.standard_normal((20, 16))]).astype(
        np.float32)  # rows 100..119 duplicate rows 0..19
    scores = np.zeros(120)
    scores[:20] = 2 + np.arange(20)  # originals and their copies rank at the top
    scores[100:] = 1.5 + np.arange(20)
    index = EmbeddingIndex.build(emb, progress=False)
    plain = select_batch(scores, 30)
    assert len({i % 100 for i in plain.tolist() if i < 20 or i >= 100}) < 30  # has duplicates
    picked = select_batch(scores, 30, index=index, min_similarity=0.99)
    assert len(picked) == 30 and len(set(picked.tolist())) == 30
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit[picked] @ unit[picked].T
    np.fill_diagonal(sims, 0)
    assert sims.max() <= 0.99
    # greedy reference: walk the top-k order and skip anything near an already taken item
    taken = []
    for i in np.argsort(-scores, kind="stable"):
        if all(unit[i] @ unit[j] <= 0.99 for j in taken):
            taken.append(i)
        if len(taken) == 30:
            break
    np.testing.assert_array_equal(picked, taken)
    with pytest.raises(ValueError, match="needs an index"):
        select_batch(scores, 3, min_similarity=0.9)
    with pytest.raises(ValueError, match="index holds 120 items but scores has 119"):
        select_batch(scores[:119], 3, index=index, min_similarity=0.9)
