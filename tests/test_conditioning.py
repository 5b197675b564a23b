"""Label-free pathwise conditioning (MATH.md §6) against brute force: the curvature scale
against the library's GGN, Sherman–Morrison against the explicit inverse, and the updated
draws' covariance against the conditioned matrix normal (Monte Carlo)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from activevlm.acquisition import PathwiseConditioning, curvature_scale
from activevlm.bayes import JointDraws
from activevlm.bayes.kfac import ggn_sum
from tests.posterior_toy import toy_posterior


def brute_gamma(post, text_act, act, residual, loss):
    """``tr(B̃⁻¹ H_i)/D`` with ``H_i`` from ``ggn_sum`` on one input at a time."""
    head = post.head
    g = post.image.mean(act) + (0 if residual is None else residual)
    Y = F.normalize(head.text_embeddings(text_act.to(g)), dim=-1)
    out = []
    for i in range(len(g)):
        H = ggn_sum(g[i : i + 1], Y, head.logit_scale, loss, head.logit_bias)
        out.append(torch.trace(post.image.B_inv @ H) / post.image.out_dim)
    return torch.stack(out)


@pytest.mark.parametrize("siglip,loss", [(False, "infonce"), (True, "sigmoid"),
                                         (True, "infonce")])
def test_curvature_scale_matches_ggn(siglip, loss):
    post, text_act = toy_posterior(D=5, d_img=6, d_txt=4, C=7, siglip=siglip, seed=3)
    gen = torch.Generator().manual_seed(1)
    act = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    residual = 0.3 * torch.randn(9, 5, generator=gen, dtype=torch.float64) if siglip else None
    got = curvature_scale(post, text_act, act, residual, loss=loss)
    want = brute_gamma(post, text_act, act, residual, loss)
    assert (want > 0).all()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def make_state(post, text_act, act, k, seed):
    draws = JointDraws.from_posterior(post, text_act, k, torch.Generator().manual_seed(seed),
                                      device="cpu", dtype=torch.float64)
    return PathwiseConditioning(post, draws, text_act, act)


def test_sherman_morrison_matches_explicit_inverse():
    post, text_act = toy_posterior(D=4, d_img=6, seed=1)
    act = torch.randn(8, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    state = make_state(post, text_act, act, 3, seed=0)
    precision = torch.linalg.inv(post.image.A_tilde_inv)
    for row in (5, 2, 7):
        pick = state.condition(row)
        precision = precision + pick.c * torch.outer(act[row], act[row])
        torch.testing.assert_close(state.a_tilde_inv, torch.linalg.inv(precision),
                                   rtol=1e-10, atol=1e-12)
    # c is n·γ of the pick, γ from the brute-force GGN
    gamma = brute_gamma(post, text_act, act[[5, 2, 7]], None, "infonce")
    torch.testing.assert_close(torch.tensor([p.c for p in state.picks], dtype=torch.float64),
                               post.image.pseudo_count * gamma, rtol=1e-10, atol=0)


K_MC = 200_000
MC_TOL = 0.02  # relative Frobenius error; the MC standard error is ~0.3 % at K·D = 6e5


def column_covariance(state, post, d):
    """Empirical ``Ã⁻¹`` from the updated draws: the tracked rows ``0..d-1`` are the unit
    vectors, so their deviations are the weight draws' columns; whitening the rows by
    ``B̃`` gives ``E[ΔWᵀ B̃ ΔW] / D = Ã⁻¹``."""
    dw = state.deviation[:, :d, :]  # [K, d, D] = (W_k − W*)ᵀ
    b_tilde = torch.linalg.inv(post.image.B_inv)
    return torch.einsum("kid,de,kje->ij", dw, b_tilde, dw) / (dw.shape[0] * dw.shape[2])


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_pathwise_draws_have_the_conditioned_covariance():
    """Two picks: after each, the updated draws' column covariance is Ã'⁻¹ (Sherman–Morrison)
    within MC error, while it is far from the covariance before the pick."""
    d = 4
    post, text_act = toy_posterior(D=3, d_img=d, prior_precision=0.01, scale=3.0, seed=0)
    picks = torch.tensor([[1.0, -0.5, 0.8, 0.3], [-0.4, 1.2, 0.2, -0.9]], dtype=torch.float64)
    act = torch.cat([torch.eye(d, dtype=torch.float64), picks])
    state = make_state(post, text_act, act, K_MC, seed=5)
    before = post.image.A_tilde_inv
    assert rel_err(column_covariance(state, post, d), before) < MC_TOL
    for row in (d, d + 1):
        prev = state.a_tilde_inv.clone()
        pick = state.condition(row)
        assert pick.c * pick.v > 1  # a pick that visibly changes the posterior
        emp = column_covariance(state, post, d)
        assert rel_err(emp, state.a_tilde_inv) < MC_TOL
        assert rel_err(emp, prev) > 5 * MC_TOL
        # the mean is untouched: the deviations stay centred
        assert state.deviation.mean(0).abs().max() < 0.02


def test_deferred_updates_equal_eager_rank_one_updates():
    """Rows read at different times (some never until the end) hold exactly the embeddings of
    the eager update ``g −= β(uᵀx̃)δ`` applied to every row at every pick."""
    post, text_act = toy_posterior(D=5, d_img=6, seed=4)
    act = torch.randn(12, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    state = make_state(post, text_act, act, 7, seed=1)
    eager = state.deviation.clone()  # [K, P, D], nothing deferred yet
    aug = post.image.augment(act)
    a_inv = post.image.A_tilde_inv.clone()
    for step, row in enumerate([3, 8, 3, 0, 11, 5]):
        pick = state.condition(row)
        u = a_inv @ aug[row]
        beta = (1.0 - (1.0 + pick.c * pick.v) ** -0.5) / pick.v
        assert pick.beta == pytest.approx(beta, rel=1e-12)
        eager -= beta * (aug @ u)[None, :, None] * eager[:, row][:, None, :]
        a_inv -= pick.c / (1 + pick.c * pick.v) * torch.outer(u, u)
        read = [step, (step + 5) % 12, 9] if step % 2 else [row, 1]
        torch.testing.assert_close(state.embeddings(read), eager[:, read] + state.mean[read],
                                   rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state.deviation, eager, rtol=1e-10, atol=1e-12)
