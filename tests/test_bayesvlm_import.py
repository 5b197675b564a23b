"""Import of BayesVLM's published factor files (CLIP ViT-B/32 laion2b), README numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from activevlm.bayes.bayesvlm_io import from_bayesvlm_files
from activevlm.bayes.evidence import optimize_prior_precision
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.models.head import ProjectionHead

# ../shared beside the checkout (as CI lays it out)
REF = (Path(__file__).resolve().parents[2] / "shared" / "reference"
       / "bayesvlm-clip-vit-b-32-laion2b")
N_PAIRS = 327_680            # pairs the factors were estimated from (reference README)
pytestmark = pytest.mark.skipif(not REF.exists(), reason=f"reference factors absent: {REF}")


def random_head(image_bias: bool = False) -> ProjectionHead:
    """ViT-B/32 shapes with random weights (no real weights exist offline)."""
    g = torch.Generator().manual_seed(0)
    return ProjectionHead(torch.randn(512, 768, generator=g) / 768 ** 0.5,
                          torch.randn(512, 512, generator=g) / 512 ** 0.5, 100.0,
                          torch.zeros(512) if image_bias else None)


@pytest.fixture(scope="module")
def post() -> BayesVLMPosterior:
    return from_bayesvlm_files(REF, random_head(), model_id="ViT-B-32")


def expected_quadratic(m) -> float:
    """E[aᵀÃ⁻¹a] = tr(Ã⁻¹ · A/√N) with A/√N = E[aaᵀ]."""
    return float(torch.trace(m.A_tilde_inv.double() @ m.A.double())) / math.sqrt(N_PAIRS)


def test_readme_numbers(post):
    assert post.image.prior_precision == pytest.approx(1708.9451904296875)
    assert post.text.prior_precision == pytest.approx(1255.334228515625)
    assert post.image.pseudo_count == post.text.pseudo_count == 1.0
    rel = 1e-3
    assert float(torch.trace(post.image.A.double())) / math.sqrt(N_PAIRS) == \
        pytest.approx(986.8, rel=rel)
    assert float(torch.trace(post.text.A.double())) / math.sqrt(N_PAIRS) == \
        pytest.approx(586.3, rel=rel)
    assert expected_quadratic(post.image) == pytest.approx(1.171, rel=rel)
    assert expected_quadratic(post.text) == pytest.approx(0.820, rel=rel)
    assert float(torch.trace(post.image.B_inv)) == pytest.approx(9.90, rel=rel)
    assert float(torch.trace(post.text.B_inv)) == pytest.approx(10.34, rel=rel)
    m10 = post.image.with_prior(prior_precision=2997.9, pseudo_count=10.0)
    assert expected_quadratic(m10) == pytest.approx(0.399, rel=rel)
    assert float(torch.trace(m10.B_inv)) == pytest.approx(5.96, rel=rel)


def test_pseudo_count_override_and_description():
    p = from_bayesvlm_files(REF, random_head(), pseudo_count=10.0)
    assert p.image.pseudo_count == p.text.pseudo_count == 10.0
    assert p.data_description["source"] == "bayesvlm_files"
    assert p.data_description["prior_file"]["lambda_img"] == pytest.approx(1708.945, rel=1e-6)


def test_evidence_recovers_lambda_from_stationarity_on_real_factors(post):
    """On the real eigenvalues: choose ‖W*‖² so that dlogZ/dλ = 0 at a target λ (closed form)
    and check the optimiser finds that λ."""
    m = post.image
    a, b = m.eig_A[0], m.eig_B[0]
    d_in, d_out = a.numel(), b.numel()
    for target in (30.0, 1708.9, 2e5):
        s = math.sqrt(target)
        sq = (d_in * d_out / target
              - (d_out * (1 / (s * (a + s))).sum() + d_in * (1 / (s * (b + s))).sum()) / 2)
        lam = optimize_prior_precision(float(sq), a, b, m.pseudo_count)
        assert lam == pytest.approx(target, rel=1e-4)


def test_missing_file_named(tmp_path):
    for f in REF.iterdir():
        if f.name != "B_txt_analytic.pt":
            (tmp_path / f.name).symlink_to(f)
    with pytest.raises(FileNotFoundError, match="B_txt_analytic.pt"):
        from_bayesvlm_files(tmp_path, random_head())
    (tmp_path / "prior_precision_analytic.json").unlink()
    with pytest.raises(FileNotFoundError, match="prior_precision_analytic.json"):
        from_bayesvlm_files(tmp_path, random_head())


def test_shape_mismatch_named():
    # a biased image projection needs A_img of shape [769, 769]
    with pytest.raises(ValueError, match=r"A_img_analytic.pt: shape \[768, 768\].*\[769, 769\]"):
        from_bayesvlm_files(REF, random_head(image_bias=True))
    small = ProjectionHead(torch.zeros(256, 768), torch.zeros(256, 512), 100.0)
    with pytest.raises(ValueError, match=r"B_img_analytic.pt: shape \[512, 512\]"):
        from_bayesvlm_files(REF, small)
