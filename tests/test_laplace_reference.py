"""activevlm's KFAC curvature and Laplace evidence against laplace-torch 0.3 on the same model:
a bias-free linear image projection followed by a cosine cross-entropy over fixed class text
embeddings (labels mode), where the GGN is exact and full vs. Kron can be compared exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from activevlm.bayes import BayesVLMPosterior, CurvatureBackend, estimate_kfac, ggn_sum
from activevlm.bayes.curvature import laplace_torch_image_factors
from activevlm.bayes.evidence import log_evidence
from activevlm.models import ProjectionHead

laplace = pytest.importorskip("laplace")
D_IMG, D, C, D_TXT, N, SCALE = 6, 4, 5, 7, 30, 5.0


class CosineClassifier(nn.Module):
    def __init__(self, Y: torch.Tensor, s: float) -> None:
        super().__init__()
        self.register_buffer("Y", Y)
        self.s = s

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.s * F.normalize(g, dim=-1) @ self.Y.T


@pytest.fixture(scope="module")
def problem():
    """A float64 head, activations, class text activations and the same model in torch."""
    g = torch.Generator().manual_seed(0)
    head = ProjectionHead(torch.randn(D, D_IMG, generator=g, dtype=torch.float64),
                          torch.randn(D, D_TXT, generator=g, dtype=torch.float64), SCALE)
    act = torch.randn(N, D_IMG, generator=g, dtype=torch.float64)
    text_act = torch.randn(C, D_TXT, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (N,), generator=g)
    Y = F.normalize(head.text_embeddings(text_act), dim=-1)
    linear = nn.Linear(D_IMG, D, bias=False).double()
    linear.weight.data.copy_(head.image_weight)
    model = nn.Sequential(linear, CosineClassifier(Y, SCALE))
    loader = DataLoader(TensorDataset(act, labels), batch_size=N)
    return head, act, text_act, Y, model, loader


def fitted(model, loader, structure: str):
    la = laplace.Laplace(model, "classification", subset_of_weights="all",
                         hessian_structure=structure)
    la.fit(loader)
    return la


@pytest.fixture
def float64_default():
    """laplace-torch's full GGN multiplies by ``torch.eye`` of the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_per_sample_ggn_equals_laplace_torch_full_ggn(problem, float64_default):
    """Σ_i (H_i ⊗ a_i a_iᵀ) from our analytic ggn_sum = laplace-torch's exact GGN."""
    head, act, _, Y, model, loader = problem
    la = fitted(model, loader, "full")
    g = act @ head.image_weight.T
    ours = sum(torch.kron(ggn_sum(g[i:i + 1], Y, SCALE), torch.outer(act[i], act[i]))
               for i in range(N))  # row-major vec(W [D, d]): index (o, i)
    assert la.H.shape == (D * D_IMG, D * D_IMG)
    torch.testing.assert_close(la.H, ours, rtol=1e-12, atol=1e-12)


def test_kfac_factors_equal_laplace_torch_kron(problem):
    """Our A ⊗ B (Σaaᵀ/√N ⊗ ΣH/√N) = laplace-torch's Kron GGN (ΣH ⊗ Σaaᵀ/N); the factors
    differ only by the scalar √N each way."""
    head, act, text_act, _, model, loader = problem
    ours, _ = estimate_kfac(head, act, text_act, mode="labels", batch_size=N, device="cpu",
                            dtype=torch.float64, progress=False)
    la = fitted(model, loader, "kron")
    torch.testing.assert_close(la.H.to_matrix(), torch.kron(ours.B, ours.A),
                               rtol=1e-12, atol=1e-12)
    # the backend's factors, over unequal batches (12, 12, 6), are ours exactly
    theirs = laplace_torch_image_factors(head, act, text_act, batch_size=12,
                                         device=torch.device("cpu"), dtype=torch.float64)
    torch.testing.assert_close(theirs.A, ours.A, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(theirs.B, ours.B, rtol=1e-12, atol=1e-12)
    assert theirs.num_samples == N


@pytest.mark.parametrize("lam", [1e-2, 0.7, 30.0])
def test_evidence_differs_from_laplace_torch_only_by_the_damped_log_det(problem, lam):
    """laplace-torch's log marginal likelihood of the Kron posterior A⊗B + λI and our
    evidence of the damped (√nA + √λI) ⊗ (√nB + √λI) share the prior terms
    −λ‖W*‖²/2 + (P/2) log λ exactly; the log-determinant is the one difference."""
    head, act, text_act, _, model, loader = problem
    la = fitted(model, loader, "kron")
    ours, _ = estimate_kfac(head, act, text_act, mode="labels", batch_size=N, device="cpu",
                            dtype=torch.float64, progress=False)
    a, b = torch.linalg.eigvalsh(ours.A), torch.linalg.eigvalsh(ours.B)
    sq, P = float(head.image_weight.pow(2).sum()), D * D_IMG
    prior_terms = -0.5 * lam * sq + 0.5 * P * math.log(lam)
    exact_logdet = torch.log(torch.outer(b, a).flatten() + lam).sum()
    lml = la.log_marginal_likelihood(torch.tensor(lam, dtype=torch.float64))
    assert float(lml + la.loss + 0.5 * exact_logdet) == pytest.approx(prior_terms, rel=1e-10)
    damped_logdet = D * torch.log(a + math.sqrt(lam)).sum() + D_IMG * torch.log(
        b + math.sqrt(lam)).sum()
    ours_value = float(log_evidence(lam, sq, a, b, 1.0))
    assert ours_value + 0.5 * float(damped_logdet) == pytest.approx(prior_terms, rel=1e-10)
    assert damped_logdet > exact_logdet  # (√a+√λ)(√b+√λ) > ab + λ


def test_laplace_torch_backend_gives_the_same_posterior(problem):
    head, act, text_act, *_ = problem
    head32 = head.to(dtype=torch.float32)
    kw = dict(mode="labels", batch_size=8, device="cpu", progress=False)
    ours = BayesVLMPosterior.fit(head32, act.float(), text_act.float(), **kw)
    theirs = BayesVLMPosterior.fit(head32, act.float(), text_act.float(),
                                   backend="laplace-torch", **kw)
    torch.testing.assert_close(theirs.image.A, ours.image.A, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(theirs.image.B, ours.image.B, rtol=1e-5, atol=1e-6)
    assert theirs.image.prior_precision == pytest.approx(ours.image.prior_precision, rel=1e-4)
    assert torch.equal(theirs.text.A, ours.text.A) and torch.equal(theirs.text.B, ours.text.B)
    assert CurvatureBackend("laplace-torch") is CurvatureBackend.LAPLACE_TORCH


def test_laplace_torch_backend_refuses_what_it_cannot_compute(problem):
    head, act, text_act, *_ = problem
    head32 = head.to(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"labels-mode CLIP heads only; got mode='pairs'"):
        BayesVLMPosterior.fit(head32, act.float(), act.float() @ torch.ones(D_IMG, D_TXT),
                              mode="pairs", backend="laplace-torch", progress=False)
    biased = ProjectionHead(head32.image_weight, head32.text_weight, SCALE,
                            image_bias=torch.zeros(D), logit_bias=-1.0)
    with pytest.raises(ValueError, match=r"loss='sigmoid' \(needs 'infonce'\), an image bias"):
        BayesVLMPosterior.fit(biased, act.float(), text_act.float(), mode="labels",
                              backend="laplace-torch", progress=False)
    with pytest.raises(ValueError, match=r"backend must be one of \['activevlm', "
                                         r"'laplace-torch'\], got 'backpack'"):
        BayesVLMPosterior.fit(head32, act.float(), text_act.float(), mode="labels",
                              backend="backpack", progress=False)
