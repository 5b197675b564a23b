"""Tempering the refitted posterior (covariance × τ) and choosing τ by cross-fitting on the
run's own labels (activevlm/finetune/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bayes.probcosine import logit_moments, probit_probs
from activevlm.finetune import FinetuneConfig, finetune_head
from activevlm.finetune.calibration import (
    TAU_GRID,
    crossfit_temperature,
    fold_indices,
    heldout_log_likelihood,
    recentred_on,
    tempered,
)
from activevlm.loop.simulate import posterior_stats
from tests.toy import toy_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch"), per=10)


@pytest.fixture(scope="module")
def posterior(pool):
    return fit_pool_posterior(pool, split="train", progress=False)


def _data(pool, domain="sketch"):
    rows = pool.indices(domain=domain)
    act = torch.from_numpy(pool.rows(rows)[0])
    labels = torch.from_numpy(pool.items["label"].to_numpy()[rows])
    return act, labels, torch.from_numpy(pool.text_activations)


def test_tempering_multiplies_the_weight_covariance_by_tau(posterior):
    """Monte Carlo: Cov[W ã] of the tempered draws is τ·v(a)·B̃⁻¹ of the posterior."""
    tau = 0.3
    post = posterior.image
    hot = tempered(posterior, tau).image
    a = torch.randn(1, post.in_dim, dtype=post.W_map.dtype, generator=torch.Generator()
                    .manual_seed(0))
    W = hot.sample(40_000, torch.Generator().manual_seed(1))  # [k, D, d]
    g = (W @ post.augment(a).T)[..., 0]  # [k, D]
    empirical = torch.cov(g.T.double())
    _, v = post.embedding_moments(a)
    expected = tau * float(v) * post.B_inv.double()
    scale = expected.diagonal().mean()
    assert (empirical - expected).abs().max() / scale < 0.05
    assert torch.allclose(hot.W_map, post.W_map)
    with pytest.raises(ValueError, match="tau must be > 0"):
        tempered(posterior, 0.0)


def test_heldout_likelihood_equals_the_tempered_posteriors_own_predictive(pool, posterior):
    """The fast path (τ folded into v) equals logit_moments on each tempered posterior."""
    act, labels, text = _data(pool)
    fast = heldout_log_likelihood(posterior, act, labels, text)
    for i in (0, 7, 14, 16):
        mean, var = logit_moments(tempered(posterior, TAU_GRID[i]), act, text)
        p = probit_probs(mean, var).double()
        assert fast[i] == pytest.approx(float(p[torch.arange(len(labels)), labels].log().sum()),
                                        rel=1e-5, abs=1e-6)


def test_crossfit_chooses_the_best_summed_heldout_likelihood(pool, posterior):
    """Brute force: fine-tune each fold's head, score every τ, take the argmax."""
    act, labels, text = _data(pool)
    config = FinetuneConfig(max_epochs=5, val_fraction=0.0, seed=0, device="cpu")

    def fit_head(train):
        return finetune_head(posterior.head, act[train], labels[train], text, config=config,
                             progress=False).head

    cal = crossfit_temperature(posterior, fit_head, act, labels, text, folds=2, seed=3)
    total = np.zeros(len(TAU_GRID))
    for held in fold_indices(len(labels), 2, 3):
        train = np.setdiff1d(np.arange(len(labels)), held)
        post = recentred_on(posterior, fit_head(train))
        for i, tau in enumerate(TAU_GRID):
            mean, var = logit_moments(tempered(post, tau), act[held], text)
            p = probit_probs(mean, var).double()
            total[i] += float(p[torch.arange(len(held)), labels[held]].log().sum())
    assert cal.tau == TAU_GRID[int(np.argmax(total))]
    np.testing.assert_allclose(cal.nll, -total / len(labels), rtol=1e-5)
    # never below the (practically) MAP head's held-out likelihood
    assert min(cal.nll) == cal.nll[TAU_GRID.index(cal.tau)] <= cal.nll[0]


def test_crossfit_undoes_a_planted_overdispersion(pool, posterior):
    """A posterior widened 2⁸-fold is tempered back towards its own scale."""
    act, labels, text = _data(pool)
    wide = tempered(posterior, 256.0)
    cal = crossfit_temperature(wide, lambda train: posterior.head, act, labels, text)
    best_unwidened = crossfit_temperature(posterior, lambda train: posterior.head, act,
                                          labels, text).tau
    assert best_unwidened / 256.0 >= TAU_GRID[0]  # the undone widening lies on the grid
    assert cal.tau == pytest.approx(best_unwidened / 256.0)


def test_crossfit_needs_two_labels_per_fold(pool, posterior):
    act, labels, text = _data(pool)
    with pytest.raises(ValueError, match="at least 2 labels per fold"):
        crossfit_temperature(posterior, lambda t: posterior.head, act[:3], labels[:3], text)


def test_cv_is_unchanged_by_tempering_but_not_by_the_pseudo_count(pool, posterior):
    """c = n·γ scales by τ^-1/2 and v by τ^1/2: tempering cannot strengthen conditioning."""
    rows = pool.indices(domain="sketch")
    base = posterior_stats(pool, posterior, rows)["cv_median"]
    assert posterior_stats(pool, tempered(posterior, 0.05), rows)["cv_median"] == \
        pytest.approx(base, rel=1e-6)
    more_data = tempered(posterior, 1.0)
    more_data = type(posterior)(more_data.image.with_prior(pseudo_count=50.0),
                                more_data.text, posterior.head, posterior.model_id)
    assert posterior_stats(pool, more_data, rows)["cv_median"] > 2 * base
