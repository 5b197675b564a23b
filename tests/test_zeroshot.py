"""Zero-shot evaluation, reliability diagram, and the posterior/zeroshot commands end to end.

Two tiny pools of generated images: tiny CLIP with captions (posterior mode "pairs") and
tiny SigLIP (residual, biases, sigmoid link) whose dataset records a ``class_subset``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss
from typer.testing import CliRunner

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.bayes.probcosine import logit_moments, mc_probs, probit_probs
from activevlm.cli.main import app
from activevlm.evaluation import evaluate_zeroshot, predict_zeroshot, reliability_diagram
from tests.toy import toy_pool

torch.set_num_threads(2)
runner = CliRunner()


def _pool(tmp_path_factory, config: str, captions: bool, class_subset=None):
    return toy_pool(tmp_path_factory.mktemp(config), config, per=3, captions=captions,
                    splits=("train", "train", "test"), class_subset=class_subset)


@pytest.fixture(scope="module")
def clip_pool(tmp_path_factory):
    return _pool(tmp_path_factory, "tiny-clip", captions=True)


@pytest.fixture(scope="module")
def siglip_pool(tmp_path_factory):
    return _pool(tmp_path_factory, "tiny-siglip", captions=False, class_subset=[0, 2, 3])


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_deterministic_rows_match_brute_force(clip_pool):
    table = evaluate_zeroshot(clip_pool, split="test", device="cpu")
    assert list(table.columns) == ["model", "domain", "n", "accuracy", "nll", "ece", "brier"]
    assert table["model"].unique().tolist() == ["deterministic"]
    assert table["domain"].tolist() == ["all", "photo", "sketch"]
    assert table["n"].tolist() == [8, 4, 4]
    idx = clip_pool.indices(split="test")
    g = clip_pool.image_embeddings(idx).double().numpy()
    h = clip_pool.text_embeddings().double().numpy()
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    p = _softmax(clip_pool.head.logit_scale * g @ h.T)
    y = clip_pool.items["label"].to_numpy()[idx]
    row = table.iloc[0]
    assert row["accuracy"] == pytest.approx((p.argmax(1) == y).mean())
    assert row["nll"] == pytest.approx(log_loss(y, p, labels=range(4)), rel=1e-5)
    assert row["brier"] == pytest.approx(((p - np.eye(4)[y]) ** 2).sum(1).mean(), rel=1e-5)


def test_bayesian_probit_and_mc(clip_pool):
    # a fixed, strong prior keeps the posterior narrow (16 images leave most directions of
    # B̃ prior-dominated; with the evidence-optimal λ the logit std is ~2.5 here and the probit
    # approximation is off by ~0.05 in probability)
    post = fit_pool_posterior(clip_pool, split="train", pseudo_count=100.0,
                              prior_precision=1e3, progress=False, device="cpu")
    assert post.data_description["mode"] == "pairs"
    assert post.data_description["n_images"] == 16
    preds = predict_zeroshot(clip_pool, post, split="test", device="cpu")
    idx = preds.indices
    act = torch.from_numpy(clip_pool.image_activations[idx])
    txt = torch.from_numpy(clip_pool.text_activations)
    mean, var = logit_moments(post, act, txt)
    np.testing.assert_allclose(preds.probs["bayesian"], probit_probs(mean, var).numpy(),
                               rtol=1e-5, atol=1e-7)
    # the posterior is not degenerate: the Bayesian predictive differs from the MAP one
    assert np.abs(preds.probs["bayesian"] - preds.probs["deterministic"]).max() > 5e-3

    mc = predict_zeroshot(clip_pool, post, split="test", predictive="mc", mc_samples=4000,
                          seed=3, device="cpu", chunk_size=3)
    again = predict_zeroshot(clip_pool, post, split="test", predictive="mc", mc_samples=4000,
                             seed=3, device="cpu")
    np.testing.assert_allclose(mc.probs["bayesian"], again.probs["bayesian"], atol=1e-6)
    direct = mc_probs(post, act, txt, 4000, torch.Generator().manual_seed(3)).mean(0)
    np.testing.assert_allclose(mc.probs["bayesian"], direct.double().numpy(), atol=1e-6)
    assert np.abs(mc.probs["bayesian"] - preds.probs["bayesian"]).max() < 0.015  # seen 0.007

    table = evaluate_zeroshot(clip_pool, post, split="test", device="cpu")
    assert table["model"].tolist() == ["deterministic"] * 3 + ["bayesian"] * 3
    with pytest.raises(ValueError, match="model_id"):
        post.model_id = "other-model"
        predict_zeroshot(clip_pool, post, split="test")


def test_class_subset_and_siglip_paths(siglip_pool):
    assert siglip_pool.image_residuals is not None and siglip_pool.head.logit_bias is not None
    post = fit_pool_posterior(siglip_pool, progress=False,
                              device="cpu")
    assert post.data_description["mode"] == "labels"
    preds = predict_zeroshot(siglip_pool, post, split="test", device="cpu")
    assert preds.class_ids.tolist() == [0, 2, 3]
    assert preds.probs["deterministic"].shape == (len(preds.indices), 3)
    y_raw = siglip_pool.items["label"].to_numpy()[preds.indices]
    np.testing.assert_array_equal(np.array([0, 2, 3])[preds.labels], y_raw)
    # deterministic SigLIP: per-class sigmoids of the subset's logits, normalised
    logits = siglip_pool.head.logits(siglip_pool.image_embeddings(preds.indices),
                                     siglip_pool.text_embeddings()[[0, 2, 3]]).double()
    q = torch.sigmoid(logits)
    np.testing.assert_allclose(preds.probs["deterministic"], (q / q.sum(1, keepdim=True)),
                               rtol=1e-5)
    # Bayesian: residual and biases go through ProbCosine
    act = torch.from_numpy(siglip_pool.image_activations[preds.indices])
    res = torch.from_numpy(siglip_pool.image_residuals[preds.indices])
    txt = torch.from_numpy(siglip_pool.text_activations[[0, 2, 3]])
    mean, var = logit_moments(post, act, txt, residual=res)
    np.testing.assert_allclose(preds.probs["bayesian"],
                               probit_probs(mean, var, "sigmoid").numpy(), rtol=1e-5)
    full = predict_zeroshot(siglip_pool, None, split="test", class_subset=None, device="cpu")
    assert full.probs["deterministic"].shape[1] == 4


def test_reliability_diagram_png(tmp_path):
    rng = np.random.default_rng(0)
    p = _softmax(rng.normal(size=(200, 5)) * 3)
    y = rng.integers(0, 5, 200)
    out = reliability_diagram({"a": p, "b": p**2 / (p**2).sum(1, keepdims=True)}, y,
                              tmp_path / "sub" / "rel.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (500, 800)
    with pytest.raises(ValueError, match="empty"):
        reliability_diagram({}, y, tmp_path / "x.png")


def test_reliability_diagram_per_domain_without_blended_colours(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(1)
    p = _softmax(rng.normal(size=(300, 4)) * 2)
    y = np.where(rng.random(300) < 0.7, p.argmax(1), rng.integers(0, 4, 300))  # mixed gaps
    domains = np.array(["photo", "sketch", "clipart"])[rng.integers(0, 3, 300)]
    out = reliability_diagram({"a": p}, y, tmp_path / "rel.png", groups=domains)
    image = matplotlib.image.imread(out)[..., :3] * 255
    assert image.shape[:2] == (500 * 4, 400)  # all items, then one row per domain
    # the old diagram drew a translucent red gap over the blue bars: a purple nobody explained
    purple = np.array([0.7 * 31 + 0.3 * 255, 0.7 * 119, 0.7 * 180])
    assert not (np.abs(image - purple).max(-1) < 12).any()
    with pytest.raises(ValueError, match="groups"):
        reliability_diagram({"a": p}, y, tmp_path / "x.png", groups=domains[:10])


def test_cli_posterior_fit_and_zeroshot(clip_pool, tmp_path):
    post_dir = tmp_path / "post"
    res = runner.invoke(app, ["posterior", "fit", "--pool", str(clip_pool.path), "--fit-mode",
                              "labels", "--split", "train", "--pseudo-count", "2",
                              "--out", str(post_dir), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "posterior saved" in res.output
    post = BayesVLMPosterior.load(post_dir)
    assert post.image.pseudo_count == 2.0 and post.data_description["mode"] == "labels"
    assert post.model_id == clip_pool.model_id

    out = tmp_path / "zs"
    res = runner.invoke(app, ["zeroshot", "--pool", str(clip_pool.path), "--posterior",
                              str(post_dir), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "bayesian" in res.output and "deterministic" in res.output
    table = pd.read_parquet(out / "zeroshot.parquet")
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "zeroshot.csv"), check_dtype=False)
    expected = evaluate_zeroshot(clip_pool, post, split="test", device="cpu")
    pd.testing.assert_frame_equal(table, expected)
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"

    bad = runner.invoke(app, ["zeroshot", "--pool", str(clip_pool.path), "--split", "nope",
                              "--out", str(out)])
    assert bad.exit_code == 1 and "no labelled items" in bad.output
    bad = runner.invoke(app, ["posterior", "fit", "--pool", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "error" in bad.output
