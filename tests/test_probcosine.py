"""ProbCosine and the Monte Carlo predictive against independent Monte Carlo references.

The reference draws the embeddings of all inputs jointly from the matrix normal in the test
itself (10⁵ joint draws, float64; see ``reference_mc``), from inverses computed here, not
from the posterior's own factors.
Observed on these sizes (D = 32, tr Σ_g / |μ_g|² ≈ 0.01, MC std of cos ≈ 0.022, |E cos| up
to 0.54): mean error 3.7e-4 = 6.8e-4 of max|E cos| (MC standard error 1e-4); full-variance
std / MC std in [0.96, 1.16] (mean 1.02); diag-variance std / MC std in [0.95, 1.19] (mean
1.03). The mean error grows roughly linearly with the noise level (5e-3 of max|E cos| at
tr Σ_g / |μ_g|² ≈ 0.12); the std ratios do not: they come from ignoring the correlation between
gᵀh and the norms, largest for the most aligned pairs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior
from activevlm.bayes.probcosine import (
    cosine_moments,
    logit_moments,
    mc_logits,
    mc_probs,
    probit_probs,
)
from activevlm.models.head import ProjectionHead
from activevlm.models.links import link_for

DT = torch.float64
K_MC = 100_000


def _spd(n: int, g: torch.Generator, spread: float = 0.7) -> torch.Tensor:
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))[0]
    return Q @ torch.diag(torch.exp(spread * torch.randn(n, generator=g, dtype=DT))) @ Q.T


def make_problem(D=32, d_img=24, d_txt=20, N=8, C=6, n=800.0, lam=1.0, bias=False, seed=0):
    """A posterior plus activations whose MAP cosines are moderate (|cos| <~ 0.5)."""
    g = torch.Generator().manual_seed(seed)
    Wi = torch.randn(D, d_img, generator=g, dtype=DT) / math.sqrt(d_img)
    Wt = torch.randn(D, d_txt, generator=g, dtype=DT) / math.sqrt(d_txt)
    bi = 0.3 * torch.randn(D, generator=g, dtype=DT) if bias else None
    bt = 0.3 * torch.randn(D, generator=g, dtype=DT) if bias else None
    head = ProjectionHead(Wi, Wt, 10.0, bi, bt, -2.0 if bias else None)
    P = torch.randn(C, D, generator=g, dtype=DT)
    t = (torch.linalg.pinv(Wt) @ P.T).T
    lab = torch.arange(N) % C
    a = (torch.linalg.pinv(Wi) @ (P[lab] + 2.0 * torch.randn(N, D, generator=g, dtype=DT)).T).T
    a = a / a.norm(dim=-1, keepdim=True) * math.sqrt(d_img)
    t = t / t.norm(dim=-1, keepdim=True) * math.sqrt(d_txt)

    def modality(W, b, d):
        Wm = W if b is None else torch.cat([W, b[:, None]], 1)
        return ModalityPosterior(Wm, _spd(d + int(bias), g), _spd(D, g), lam, n, bias)

    post = BayesVLMPosterior(modality(Wi, bi, d_img), modality(Wt, bt, d_txt), head)
    return post, a, t


def _inv_chol(post: ModalityPosterior):
    """Test-side Ã⁻¹, B̃⁻¹ and their Cholesky factors, from A, B, n, λ directly."""
    def damped_inv(M):
        return torch.linalg.inv(math.sqrt(post.pseudo_count) * M
                                + math.sqrt(post.prior_precision) * torch.eye(len(M), dtype=DT))
    Ai, Bi = damped_inv(post.A), damped_inv(post.B)
    return Ai, Bi, torch.linalg.cholesky(Ai), torch.linalg.cholesky(Bi)


def _aug(x, has_bias):
    return torch.cat([x, torch.ones(len(x), 1, dtype=DT)], 1) if has_bias else x


def reference_mc(post, a, t, residual=None, k=K_MC, seed=123, chunk=25_000):
    """``(g·h [k, N, C], cos [k, N, C], |g|² [k, N])`` from test-side joint matrix-normal draws.

    Under one draw ``W_k = W* + L_B E_k L_Aᵀ`` the embeddings of all inputs ``X [n, d]`` are
    ``X W*ᵀ + (L_B E_k L_Aᵀ Xᵀ)ᵀ``, and the rows of ``E_k L_Aᵀ Xᵀ`` are iid
    ``N(0, X Ã⁻¹ Xᵀ)``: sampled here through the Cholesky factor of that ``[n, n]`` matrix,
    which needs ``n`` instead of ``d`` normals per row. Exactly the joint law of the draws.
    """
    g = torch.Generator().manual_seed(seed)
    sides = []
    for m, x in ((post.image, a), (post.text, t)):
        Ai, _, _, LB = _inv_chol(m)
        x = _aug(x, m.has_bias)
        sides.append((x @ m.W_map.T, LB, torch.linalg.cholesky(x @ Ai @ x.T)))
    dots, coss, sq = [], [], []
    for _ in range(0, k, chunk):
        emb = []
        for mean, LB, LG in sides:
            Z = torch.randn(chunk, LB.shape[0], len(LG), generator=g, dtype=DT) @ LG.T
            emb.append(mean + (LB @ Z).transpose(1, 2))  # [k, n, D]
        gi, ht = emb
        if residual is not None:
            gi = gi + residual
        dots.append(torch.einsum("knd,kcd->knc", gi, ht))
        coss.append(torch.einsum("knd,kcd->knc", F.normalize(gi, dim=-1), F.normalize(ht, dim=-1)))
        sq.append((gi * gi).sum(-1))
    return torch.cat(dots), torch.cat(coss), torch.cat(sq)


def _moments_inputs(post, a, t, residual=None):
    mu_g, v_g = post.image.embedding_moments(a, residual)
    mu_h, v_h = post.text.embedding_moments(t)
    return mu_g, v_g, mu_h, v_h, post.image.B_inv, post.text.B_inv


@pytest.fixture(scope="module")
def problem():
    post, a, t = make_problem(n=10_000.0)
    dot, cos, sq = reference_mc(post, a, t)
    return post, a, t, dot, cos, sq


def test_dot_product_moments_are_exact(problem):
    """E|g|², E[gᵀh], Var[gᵀh] have closed forms; the full variant must reproduce them."""
    post, a, t, dot, _, sq = problem
    mu_g, v_g, mu_h, v_h, Bi, Bt = _moments_inputs(post, a, t)
    S_g = (mu_g**2).sum(-1) + v_g * Bi.trace()
    S_h = (mu_h**2).sum(-1) + v_h * Bt.trace()
    se_sq = sq.std(0) / math.sqrt(K_MC)
    assert ((sq.mean(0) - S_g).abs() < 4 * se_sq).all()
    mean, var = cosine_moments(mu_g, v_g, mu_h, v_h, Bi, Bt, "full")
    exp_dot = mean * (S_g[:, None] * S_h[None, :]).sqrt()
    assert (dot.mean(0) - exp_dot).abs().max() < 4 * (dot.std(0) / math.sqrt(K_MC)).max()
    var_dot = var * S_g[:, None] * S_h[None, :]
    ratio = dot.var(0) / var_dot
    assert ratio.min() > 0.97 and ratio.max() < 1.03, (ratio.min(), ratio.max())


def test_cosine_mean_and_full_variance_vs_mc(problem):
    post, a, t, _, cos, _ = problem
    mean, var = cosine_moments(*_moments_inputs(post, a, t), "full")
    mc_mean, mc_std = cos.mean(0), cos.std(0)
    assert 0.01 < mc_std.mean() < 0.05  # small posterior noise, as for a fitted posterior
    err = (mean - mc_mean).abs().max() / mc_mean.abs().max()
    assert err < 1.5e-3, err  # observed 6.8e-4 (MC standard error ~2e-4 of max|cos|)
    ratio = var.sqrt() / mc_std
    assert ratio.min() > 0.93 and ratio.max() < 1.25, (ratio.min(), ratio.max())
    assert abs(ratio.mean().item() - 1) < 0.05


def test_diag_variant_vs_mc(problem):
    """Same mean; the diagonal variance is further from MC than the full one on average."""
    post, a, t, _, cos, _ = problem
    inputs = _moments_inputs(post, a, t)
    mean_f, var_f = cosine_moments(*inputs, "full")
    mean_d, var_d = cosine_moments(*inputs, "diag")
    torch.testing.assert_close(mean_d, mean_f)  # the mean uses the trace only
    mc_std = cos.std(0)
    r_full = (var_f.sqrt() / mc_std).log().abs()
    r_diag = (var_d.sqrt() / mc_std).log().abs()
    print(f"diag std/MC std in [{(var_d.sqrt() / mc_std).min():.3f}, "
          f"{(var_d.sqrt() / mc_std).max():.3f}], full in [{(var_f.sqrt() / mc_std).min():.3f}, "
          f"{(var_f.sqrt() / mc_std).max():.3f}]")
    assert r_diag.mean() > r_full.mean()
    assert r_diag.max() < math.log(1.5)
    assert (var_d - var_f).abs().max() > 0.05 * var_f.max()  # the variants really differ


def test_diag_equals_full_for_diagonal_covariances():
    g = torch.Generator().manual_seed(3)
    mu_g, mu_h = torch.randn(5, 7, generator=g, dtype=DT), torch.randn(4, 7, generator=g, dtype=DT)
    v_g, v_h = torch.rand(5, generator=g, dtype=DT), torch.rand(4, generator=g, dtype=DT)
    Bi = torch.diag(torch.rand(7, generator=g, dtype=DT))
    Bt = torch.diag(torch.rand(7, generator=g, dtype=DT))
    f = cosine_moments(mu_g, v_g, mu_h, v_h, Bi, Bt, "full")
    d = cosine_moments(mu_g, v_g, mu_h, v_h, Bi, Bt, "diag")
    torch.testing.assert_close(f, d)
    # brute force per pair with explicit covariances
    for n in range(5):
        for c in range(4):
            Sg, Sh = v_g[n] * Bi, v_h[c] * Bt
            vd = mu_g[n] @ Sh @ mu_g[n] + mu_h[c] @ Sg @ mu_h[c] + torch.trace(Sg @ Sh)
            norm = (mu_g[n] @ mu_g[n] + Sg.trace()) * (mu_h[c] @ mu_h[c] + Sh.trace())
            torch.testing.assert_close(f[1][n, c], vd / norm)
            torch.testing.assert_close(f[0][n, c], mu_g[n] @ mu_h[c] / norm.sqrt())


def test_logit_moments_scale_bias_chunks_and_array_input():
    post, a, t = make_problem(bias=True, seed=1)
    s, b = post.head.logit_scale, post.head.logit_bias
    full_m, full_v = logit_moments(post, a, t, chunk_size=100)
    m_cos, v_cos = cosine_moments(*_moments_inputs(post, a, t), "full")
    torch.testing.assert_close(full_m, s * m_cos + b)
    torch.testing.assert_close(full_v, s * s * v_cos)
    chunked = logit_moments(post, a.numpy(), t.numpy(), chunk_size=3)
    torch.testing.assert_close(chunked, (full_m, full_v))
    diag = logit_moments(post, a, t, variant="diag", chunk_size=3)
    torch.testing.assert_close(diag[0], full_m)
    with pytest.raises(ValueError, match="variant"):
        logit_moments(post, a, t, variant="exact")


def test_siglip_bias_and_residual_vs_mc():
    """Bias columns, logit bias and the deterministic residual on the moment and MC paths."""
    post, a, t = make_problem(bias=True, seed=2, N=5, C=4)
    r = 0.5 * torch.randn(5, 32, generator=torch.Generator().manual_seed(9), dtype=DT)
    _, cos, _ = reference_mc(post, a, t, residual=r, k=30_000)
    mean, var = logit_moments(post, a, t, residual=r, chunk_size=2)
    s, b = post.head.logit_scale, post.head.logit_bias
    mc_logit = s * cos + b
    assert (mean - mc_logit.mean(0)).abs().max() < 0.02 * s * cos.mean(0).abs().max()
    ratio = var.sqrt() / mc_logit.std(0)
    assert ratio.min() > 0.9 and ratio.max() < 1.2, (ratio.min(), ratio.max())
    # without the residual the means move: the residual is really used
    assert (logit_moments(post, a, t)[0] - mean).abs().max() > 0.1
    # library MC logits (posterior.sample) agree with the test-side reference
    lib = mc_logits(post, a, t, 20_000, torch.Generator().manual_seed(0), residual=r,
                    chunk_size=2)
    assert (lib.mean(0) - mc_logit.mean(0)).abs().max() < 4 * (lib.std(0) / math.sqrt(2e4)).max()
    torch.testing.assert_close(lib.std(0), mc_logit.std(0), rtol=0.04, atol=0)


def test_probit_matches_mc_predictive():
    post, a, t = make_problem(seed=4, n=200.0)
    mean, var = logit_moments(post, a, t)
    probit = probit_probs(mean, var)
    mc = mc_probs(post, a, t, 10_000, torch.Generator().manual_seed(0), chunk_size=3).mean(0)
    assert var.mean() > 0.1  # the variance matters: probit != plain softmax
    assert (probit - torch.softmax(mean, -1)).abs().max() > 0.02
    assert (probit - mc).abs().max() < 0.03, (probit - mc).abs().max()


def test_mc_probs_seeded_chunked_and_joint():
    post, a, t = make_problem(seed=5, N=7, C=3)
    p1 = mc_probs(post, a, t, 16, torch.Generator().manual_seed(7), chunk_size=2)
    p2 = mc_probs(post, a.numpy(), t, 16, torch.Generator().manual_seed(7), chunk_size=100)
    assert p1.shape == (16, 7, 3)
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(p1.sum(-1), torch.ones(16, 7, dtype=DT))
    # joint draws: the same image twice gets identical probabilities in every draw
    dup = mc_probs(post, torch.cat([a[:1], a[:1]]), t, 16, torch.Generator().manual_seed(7))
    torch.testing.assert_close(dup[:, 0], dup[:, 1])
    assert dup[:, 0].std(0).max() > 1e-3


def test_probit_links():
    m = torch.tensor([[2.0, -1.0, 0.5]])
    torch.testing.assert_close(probit_probs(m, torch.zeros_like(m)), torch.softmax(m, -1))
    v = torch.tensor([[4.0, 0.0, 1.0]])
    q = torch.sigmoid(m / torch.sqrt(1 + math.pi / 8 * v))
    torch.testing.assert_close(probit_probs(m, v, "sigmoid", normalize=False), q)
    torch.testing.assert_close(probit_probs(m, v, "sigmoid"), q / q.sum())
    assert link_for(ProjectionHead(torch.eye(2), torch.eye(2), 1.0, logit_bias=-1.0)) == "sigmoid"
    assert link_for(ProjectionHead(torch.eye(2), torch.eye(2), 1.0)) == "softmax"
    with pytest.raises(ValueError, match="link"):
        probit_probs(m, v, "tanh")


def test_float32_posterior_moments_close_to_float64():
    post, a, t = make_problem(seed=6)
    m64, v64 = logit_moments(post, a, t)
    m32, v32 = logit_moments(post.to(dtype=torch.float32), a.float(), t.float())
    assert m32.dtype == torch.float32
    np.testing.assert_allclose(m32.numpy(), m64.numpy(), atol=1e-4)
    np.testing.assert_allclose(v32.numpy(), v64.numpy(), rtol=1e-3, atol=1e-7)
