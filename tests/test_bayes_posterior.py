"""Matrix-normal posterior, evidence and persistence, against dense/brute-force references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from activevlm.bayes.evidence import log_evidence, optimize_prior_precision
from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior, fit_posterior
from activevlm.models.head import ProjectionHead

torch.set_num_threads(2)


def rand_psd(n: int, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    X = torch.randn(n, 2 * n, generator=g, dtype=torch.float64)
    return scale * X @ X.T / (2 * n)


def small_posterior(has_bias: bool = True, lam: float = 0.7, n: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    D, d = 3, 4 + int(has_bias)
    W = torch.randn(D, d, generator=g, dtype=torch.float64)
    return ModalityPosterior(W, rand_psd(d, g), rand_psd(D, g, 2.0), lam, n, has_bias)


def dense_log_evidence(lam: float, W, A, B, n: float) -> float:
    """Laplace log evidence with the dense precision Ã ⊗ B̃ and an isotropic Gaussian prior
    (log-likelihood term omitted: it does not depend on λ)."""
    P = W.numel()
    prior = MultivariateNormal(torch.zeros(P, dtype=torch.float64),
                               precision_matrix=lam * torch.eye(P, dtype=torch.float64))
    eye = torch.eye
    At = math.sqrt(n) * A + math.sqrt(lam) * eye(A.shape[0], dtype=torch.float64)
    Bt = math.sqrt(n) * B + math.sqrt(lam) * eye(B.shape[0], dtype=torch.float64)
    _, logdet = torch.linalg.slogdet(torch.kron(At, Bt))
    return float(prior.log_prob(W.reshape(-1)) + 0.5 * P * math.log(2 * math.pi) - 0.5 * logdet)


def test_log_evidence_equals_dense_laplace_evidence():
    post = small_posterior()
    lams = [1e-3, 0.05, 0.7, 4.0, 90.0]
    ours = [post.log_evidence(lam) for lam in lams]
    dense = [dense_log_evidence(lam, post.W_map, post.A, post.B, post.pseudo_count)
             for lam in lams]
    # equal up to one λ-independent constant
    offsets = torch.tensor(ours) - torch.tensor(dense)
    torch.testing.assert_close(offsets, offsets[0].expand(len(lams)), rtol=0, atol=1e-9)
    vec = log_evidence(torch.tensor(lams), float((post.W_map ** 2).sum()),
                       post.eig_A[0], post.eig_B[0], post.pseudo_count)
    torch.testing.assert_close(vec, torch.tensor(ours, dtype=torch.float64))


@pytest.mark.parametrize("n", [1.0, 10.0])
def test_optimum_equals_brute_force_grid(n):
    post = small_posterior(n=n, seed=1)
    grid = torch.logspace(-4, 4, 16001, dtype=torch.float64)   # spacing 0.115 % in λ
    At = math.sqrt(n) * post.A
    Bt = math.sqrt(n) * post.B
    eye_a, eye_b = torch.eye(At.shape[0]), torch.eye(Bt.shape[0])
    s = grid.sqrt()[:, None, None]
    logdet = torch.linalg.slogdet(
        torch.vmap(torch.kron)(At + s * eye_a, Bt + s * eye_b))[1]
    P = post.W_map.numel()
    values = -0.5 * grid * (post.W_map ** 2).sum() + 0.5 * P * grid.log() - 0.5 * logdet
    lam_grid = float(grid[values.argmax()])
    lam_opt = post.optimize_prior().prior_precision
    assert 1e-3 < lam_opt < 1e3
    assert abs(math.log(lam_opt / lam_grid)) < 2e-3
    assert lam_opt == pytest.approx(
        optimize_prior_precision(post.W_map, post.eig_A[0], post.eig_B[0], n), rel=1e-12)


def test_damped_inverses_and_cross_scalar_match_dense():
    post = small_posterior()
    lam, n = post.prior_precision, post.pseudo_count
    At = math.sqrt(n) * post.A + math.sqrt(lam) * torch.eye(5, dtype=torch.float64)
    Bt = math.sqrt(n) * post.B + math.sqrt(lam) * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(post.A_tilde_inv, torch.linalg.inv(At))
    torch.testing.assert_close(post.B_inv, torch.linalg.inv(Bt))
    torch.testing.assert_close(post.L_A @ post.L_A.T, torch.linalg.inv(At))
    a = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a1 = torch.cat([a, torch.ones(6, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(post.cross_covariance_scalar(a[:2], a[2:]),
                               a1[:2] @ torch.linalg.inv(At) @ a1[2:].T)
    _, v = post.embedding_moments(a)
    torch.testing.assert_close(v, torch.einsum("ni,ij,nj->n", a1, torch.linalg.inv(At), a1))


def test_joint_samples_mean_and_cross_input_covariance():
    """Empirical mean/cross-covariance of (g(a1), g(a2)) under shared weight draws, K = 200k.

    Tolerance: 5 standard errors per entry, from the exact covariance (mean: √(Σ_ii/K);
    covariance: √((Σ11_ii Σ22_jj + Σ12_ij²)/K) for Gaussian data).
    """
    post = small_posterior(lam=0.5, n=2.0)
    K = 200_000
    Ws = post.sample(K, torch.Generator().manual_seed(0))        # [K, D, d]
    assert Ws.shape == (K, 3, 5)
    a = torch.tensor([[0.5, -1.0, 2.0, 0.3], [1.5, 0.2, -0.7, 1.0]], dtype=torch.float64)
    g = torch.einsum("kod,nd->kno", Ws, post.augment(a))          # [K, 2, D]
    mean, v = post.embedding_moments(a)
    se_mean = (v[:, None] * post.B_inv.diagonal()[None] / K).sqrt()
    assert ((g.mean(0) - mean).abs() < 5 * se_mean).all()
    gc = g - mean                                                   # centred at the exact mean
    c12 = post.cross_covariance_scalar(a[:1], a[1:])[0, 0]
    exact = {(0, 0): v[0] * post.B_inv, (1, 1): v[1] * post.B_inv, (0, 1): c12 * post.B_inv}
    for (i, j), S in exact.items():
        emp = gc[:, i].T @ gc[:, j] / K
        se = ((v[i] * v[j] * torch.outer(post.B_inv.diagonal(), post.B_inv.diagonal())
               + S ** 2) / K).sqrt()
        assert ((emp - S).abs() < 5 * se).all(), (i, j, emp, S)
    assert abs(c12) > 0.05 * math.sqrt(v[0] * v[1])   # the check above is not vacuous


def test_same_seed_same_samples_and_joint_order():
    post = fitted_posterior()
    s1 = post.sample(5, torch.Generator().manual_seed(7))
    s2 = post.sample(5, torch.Generator().manual_seed(7))
    s3 = post.sample(5, torch.Generator().manual_seed(8))
    assert torch.equal(s1.image, s2.image) and torch.equal(s1.text, s2.text)
    assert not torch.equal(s1.image, s3.image)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(s1.image, post.image.sample(5, gen))
    assert torch.equal(s1.text, post.text.sample(5, gen))
    assert len(s1) == 5 and s1.image.shape == (5, 4, 7) and s1.text.shape == (5, 4, 4)


def fitted_posterior(**kwargs) -> BayesVLMPosterior:
    g = torch.Generator().manual_seed(5)
    head = ProjectionHead(torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g), 8.0,
                          torch.randn(4, generator=g), torch.randn(4, generator=g), -2.0,
                          {"family": "siglip"})
    img, txt = torch.randn(40, 6, generator=g), torch.randn(40, 3, generator=g)
    return fit_posterior(head, img, txt, mode="pairs", batch_size=16, pseudo_count=(2.0, 3.0),
                         model_id="tiny-siglip", data_description={"source": "unit test"},
                         device="cpu", progress=False, **kwargs)


def test_fit_maximises_evidence_per_modality():
    post = fitted_posterior()
    assert post.image.has_bias and post.image.A.shape == (7, 7)
    assert (post.image.pseudo_count, post.text.pseudo_count) == (2.0, 3.0)
    assert post.data_description["image_factors"]["loss"] == "sigmoid"
    for m in (post.image, post.text):
        lam = m.prior_precision
        assert m.log_evidence(lam) > max(m.log_evidence(lam * 1.05), m.log_evidence(lam / 1.05))
    fixed = fitted_posterior(prior_precision=(5.0, 6.0))
    assert (fixed.image.prior_precision, fixed.text.prior_precision) == (5.0, 6.0)
    torch.testing.assert_close(fixed.image.A, post.image.A)


def test_save_load_round_trip(tmp_path):
    post = fitted_posterior()
    post.save(tmp_path / "post")
    back = BayesVLMPosterior.load(tmp_path / "post")
    assert back.model_id == "tiny-siglip"
    assert back.data_description == post.data_description
    assert back.head.logit_bias == post.head.logit_bias
    for a, b in ((post.image, back.image), (post.text, back.text)):
        assert (a.prior_precision, a.pseudo_count, a.has_bias) == \
            (b.prior_precision, b.pseudo_count, b.has_bias)
        for name in ("W_map", "A", "B", "B_inv", "A_tilde_inv"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(post.sample(3, torch.Generator().manual_seed(1)).text,
                       back.sample(3, torch.Generator().manual_seed(1)).text)
    assert not list((tmp_path / "post").glob(".*tmp*"))      # atomic writes left no temp files
    with pytest.raises(FileNotFoundError, match="posterior file missing"):
        BayesVLMPosterior.load(tmp_path)


def test_head_for_sample_reproduces_sampled_embeddings():
    post = fitted_posterior()
    draws = post.sample(2, torch.Generator().manual_seed(3))
    x = torch.randn(5, 6)
    h1 = post.head_for_sample(draws, 1)
    torch.testing.assert_close(h1.image_embeddings(x), post.image.augment(x) @ draws.image[1].T)


def test_shape_errors_name_the_factor():
    W = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"A must have shape \[4, 4\]"):
        ModalityPosterior(W, torch.eye(5), torch.eye(3), 1.0)
    with pytest.raises(ValueError, match="prior_precision must be > 0"):
        ModalityPosterior(W, torch.eye(4), torch.eye(3), 0.0)
