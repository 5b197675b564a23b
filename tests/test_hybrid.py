"""The coverage/EPIG hybrid: greedy EPIG/BALD restricted to TypiClust's typical points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from activevlm.acquisition import greedy_batch, kmeans_labels, typical_greedy, typiclust
from tests.posterior_toy import toy_posterior
from tests.test_coverage import ref_typicality

SIZES = (24, 20, 16, 14, 12, 10)
OUTLIER = sum(SIZES)


@pytest.fixture(scope="module")
def world():
    """Six clumps of activations plus one far outlier (row ``OUTLIER``); targets near the
    clumps; embeddings = the MAP image embeddings."""
    post, text_act = toy_posterior(D=4, d_img=8, d_txt=3, C=4, prior_precision=0.01,
                                   text_prior_precision=1e6, image_rank=2, scale=3.0, seed=0)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(SIZES), 8))
    clumps = [c + 0.15 * rng.normal(size=(n, 8)) for c, n in zip(centres, SIZES, strict=True)]
    act = np.concatenate(clumps + [3 * rng.normal(size=(1, 8))])
    target = np.concatenate([c + 0.15 * rng.normal(size=(3, 8)) for c in centres])
    emb = post.image.mean(torch.from_numpy(act)).numpy()
    return post, text_act, act, target, emb


def run(world, budget, heuristic="epig", **kw):
    post, text_act, act, target, emb = world
    return typical_greedy(post, text_act, act, emb, budget, heuristic=heuristic,
                          target_act=target if heuristic == "epig" else None, n_draws=500,
                          generator=torch.Generator().manual_seed(0), device="cpu", **kw)


@pytest.mark.parametrize("heuristic", ["epig", "bald"])
def test_each_pick_is_the_typical_point_of_its_own_free_cluster(world, heuristic):
    _, _, _, _, emb = world
    labelled = [0, 30]  # in the first two clumps
    budget, oversample = 4, 2.0
    rows = run(world, budget, heuristic, labelled=labelled, oversample=oversample).positions
    labels = kmeans_labels(emb, len(labelled) + math.ceil(oversample * budget), seed=0)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert len(rows) == budget
    assert len(set(labels[rows].tolist())) == budget  # one pick per cluster
    assert not set(labels[rows].tolist()) & set(labels[labelled].tolist())
    for r in rows:
        members = np.flatnonzero(labels == labels[r])
        assert len(members) > 5
        assert r == members[np.argmax(ref_typicality(x[members].astype(np.float64), 20))]


def test_oversample_one_is_typiclust(world):
    _, _, _, _, emb = world
    budget = len(SIZES)
    rows = run(world, budget, oversample=1.0).positions
    assert set(rows.tolist()) == set(typiclust(emb, budget, seed=0).tolist())


def test_bald_outlier_is_left_out(world):
    """Plain greedy BALD over all rows takes the far outlier; the hybrid never does."""
    post, text_act, act, _, _ = world
    plain = greedy_batch(post, text_act, act, 4, heuristic="bald", n_draws=500,
                         generator=torch.Generator().manual_seed(0), device="cpu")
    assert OUTLIER in plain.positions
    for oversample in (1.0, 2.0, 3.0):
        assert OUTLIER not in run(world, 4, "bald", oversample=oversample).positions


def test_same_seed_same_batch(world):
    a, b = run(world, 3, seed=4), run(world, 3, seed=4)
    np.testing.assert_array_equal(a.positions, b.positions)
