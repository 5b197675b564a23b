"""TypiClust and ProbCover against brute-force numpy references on small embedding sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activevlm.acquisition import (
    kmeans_labels,
    probcover,
    probcover_delta,
    typical_representatives,
    typicality,
    typiclust,
)


def blobs(n_per=(40, 30, 20, 12, 8), dim=6, spread=0.25, seed=0):
    """Unit vectors in clumps of different sizes around random centres: ``[N, dim]``."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=dim) + spread * rng.normal(size=(n, dim)) for n in n_per]
    x = np.concatenate(parts)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dist(x):
    return np.sqrt(np.clip(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0, None))


def ref_typicality(x, k):
    d = dist(x)
    np.fill_diagonal(d, np.inf)
    k = min(k, len(x) - 1)
    return 1.0 / np.sort(d, axis=1)[:, :k].mean(1)


def ref_typiclust(x, budget, labels, labelled, k=20, min_size=5):
    """The authors' loop, in numpy: clusters by (labelled count, -size), cycled; each visit
    takes the most typical point among the cluster's remaining unlabelled points."""
    sizes = np.bincount(labels)
    existing = np.bincount(labels[labelled], minlength=len(sizes))
    clusters = [c for c in range(len(sizes)) if sizes[c] > min_size]
    clusters.sort(key=lambda c: (existing[c], -sizes[c], c))
    avail = np.ones(len(x), dtype=bool)
    avail[labelled] = False
    picks = []
    i = 0
    while len(picks) < budget:
        members = np.flatnonzero((labels == clusters[i % len(clusters)]) & avail)
        i += 1
        if len(members) == 0:
            continue
        best = members[np.argmax(ref_typicality(x[members], k))]
        picks.append(int(best))
        avail[best] = False
    return picks


def test_typicality_matches_brute_force():
    x = blobs(seed=1).astype(np.float32)
    for k in (1, 5, 20, 500):
        np.testing.assert_allclose(typicality(x, k), ref_typicality(x.astype(np.float64), k),
                                   rtol=2e-3)


def test_typiclust_matches_reference_and_skips_labelled_clusters():
    x = blobs(seed=2)
    labelled = np.array([0, 1, 45])  # two in the largest clump, one in the second
    budget = 9
    labels = kmeans_labels(x, len(labelled) + budget, seed=3)
    got = typiclust(x, budget, labelled=labelled, clusters=labels)
    want = ref_typiclust(x, budget, labels, labelled)
    assert got.tolist() == want
    assert not set(got.tolist()) & set(labelled.tolist())
    # clusters without a labelled point come first: the first picks avoid labelled clusters
    n_free = len(set(labels.tolist()) - set(labels[labelled].tolist()))
    n_free_big = sum(1 for c in set(labels.tolist()) - set(labels[labelled].tolist())
                     if (labels == c).sum() > 5)
    assert n_free >= n_free_big > 0
    assert not set(labels[got[:n_free_big]].tolist()) & set(labels[labelled].tolist())


def test_typiclust_default_clustering_is_seeded():
    x = blobs(seed=4)
    a = typiclust(x, 6, labelled=[3], seed=7)
    b = typiclust(x, 6, labelled=[3], seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        a, typiclust(x, 6, labelled=[3], clusters=kmeans_labels(x, 7, seed=7)))


def test_typical_representatives_are_typiclust_first_visits():
    x = blobs(seed=5)
    labels = kmeans_labels(x, 8, seed=0)
    labelled = [int(np.flatnonzero(labels == 0)[0])]
    reps = typical_representatives(x, labelled=labelled, clusters=labels, min_cluster_size=0)
    assert len(reps) == 7 and 0 not in labels[reps]
    assert len(set(labels[reps].tolist())) == 7
    for r in reps:
        members = np.flatnonzero(labels == labels[r])
        assert r == members[np.argmax(ref_typicality(x[members], 20))]


def ref_probcover(x, budget, delta, labelled):
    """Greedy max coverage with the coverage counts recomputed from scratch every step."""
    adj = dist(x) < delta
    covered = adj[labelled].any(0) if len(labelled) else np.zeros(len(x), dtype=bool)
    blocked = np.zeros(len(x), dtype=bool)
    blocked[labelled] = True
    picks = []
    for _ in range(budget):
        counts = (adj & ~covered[None, :]).sum(1)
        counts[blocked] = -1
        best = int(np.argmax(counts))
        if counts[best] <= 0:
            break
        picks.append(best)
        blocked[best] = True
        covered |= adj[best]
    return picks


def test_probcover_matches_greedy_reference():
    x = blobs(seed=6)
    delta = 0.35
    free = probcover(x, 8, delta=delta)
    assert free.tolist() == ref_probcover(x, 8, delta, np.empty(0, dtype=np.int64))
    # label the two densest balls' centres (and one more point): their balls count as covered
    labelled = [int(free[0]), int(free[1]), 95]
    got = probcover(x, 8, delta=delta, labelled=labelled)
    want = ref_probcover(x, 8, delta, np.asarray(labelled))
    assert got.tolist() == want
    assert not set(got.tolist()) & set(labelled)


def test_probcover_fills_at_random_once_everything_is_covered():
    x = blobs(n_per=(10, 10), seed=7)
    a = probcover(x, 15, delta=1.9, seed=1)  # one ball covers everything
    assert len(a) == len(set(a.tolist())) == 15
    np.testing.assert_array_equal(a, probcover(x, 15, delta=1.9, seed=1))


@pytest.mark.parametrize("alpha", [0.8, 0.9, 0.95])
def test_probcover_delta_is_the_largest_alpha_pure_radius(alpha):
    """Brute-force purity (balls by definition): pure enough at δ, not at any larger radius."""
    x = blobs(seed=8)
    delta = probcover_delta(x, 5, alpha=alpha, seed=0)
    pseudo = kmeans_labels(x, 5, seed=0)
    d = dist(x)

    def purity(r):
        inside = d < r
        return np.mean([(pseudo[inside[i]] == pseudo[i]).all() for i in range(len(x))])

    assert purity(delta) >= alpha
    assert purity(delta * (1 + 1e-6) + 1e-9) < alpha
    assert math.isclose(purity(delta), math.ceil(alpha * len(x)) / len(x), abs_tol=0.05)
    # given n_classes, probcover uses that delta
    np.testing.assert_array_equal(probcover(x, 5, n_classes=5, alpha=alpha),
                                  probcover(x, 5, delta=delta))
