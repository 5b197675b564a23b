"""ViLU: shapes and masking, the loss weight, training on a planted failure pattern, save/load,
pool wiring, the CLI and the EPIG combinations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from activevlm.bayes.posterior import fit_posterior
from activevlm.bayes.probcosine import logit_moments
from activevlm.cli.main import app
from activevlm.metrics.failure import auroc, msp
from activevlm.models.head import ProjectionHead
from activevlm.pool import embed_dataset, open_pool
from activevlm.vilu import (
    ViLU,
    ViLUConfig,
    ViLUModel,
    caption_correct,
    correctness_split,
    evaluate_failure_prediction,
    failure_scores,
    failure_weight,
    failure_weighted,
    fit_vilu,
    fit_vilu_on_pool,
    pool_failure_scores,
    risk_coverage_plot,
    top_failure_mask,
    within_top_failures,
    zero_shot_correct,
)

torch.set_num_threads(1)  # tiny tensors: extra threads only contend
D, C = 16, 5
FAST = dict(epochs=40, batch_size=64, patience=8, hidden=(64, 32))


def planted_world(n: int, seed: int = 0, flip: float = 0.3):
    """Class texts ``[C, D]`` and images ``[n, D]``: an image sits near its class text, except
    a planted subset that sits near another class *and* carries a nuisance direction ``u``.
    Those are zero-shot failures that look as confident as the rest (MSP cannot see them),
    but ``u`` gives them away to a predictor that reads the image embedding."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    txt, u = basis[:C], basis[C]
    labels = rng.integers(0, C, size=n)
    planted = rng.random(n) < flip
    shown = np.where(planted, (labels + rng.integers(1, C, size=n)) % C, labels)
    img = txt[shown] + 0.25 * rng.normal(size=(n, D)) + 1.0 * planted[:, None] * u
    return img.astype(np.float32), txt.astype(np.float32), labels


# --------------------------------------------------------------------------------- network


def test_forward_shapes_and_identity_attention_is_clip_weighted_mean():
    torch.manual_seed(0)
    img, txt = torch.randn(7, D), torch.randn(C, D)
    net = ViLU(D, ViLUConfig(hidden=(32,)), logit_scale=30.0)
    assert net(img, txt).shape == (7,)
    assert net.w_v is net.w_k  # tied by default
    z_v, z_t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    expected = torch.softmax(30.0 * z_v @ z_t.T, dim=-1) @ z_t
    torch.testing.assert_close(net.attend(z_v, z_t, None), expected)
    # with several heads and identity projections each head attends over its own slice
    net4 = ViLU(D, ViLUConfig(hidden=(32,), num_heads=4), logit_scale=30.0)
    got = net4.attend(z_v, z_t, None)
    for h in range(4):
        sl = slice(4 * h, 4 * h + 4)
        ref = torch.softmax(30.0 * z_v[:, sl] @ z_t[:, sl].T, dim=-1) @ z_t[:, sl]
        torch.testing.assert_close(got[:, sl], ref)
    untied = ViLU(D, ViLUConfig(tie_kv=False, attention_init="random"))
    assert untied.w_v is not untied.w_k
    assert not torch.allclose(untied.w_q.weight, torch.eye(D))


def test_mask_equals_removing_candidates():
    torch.manual_seed(1)
    img, txt = torch.randn(6, D), torch.randn(C, D)
    net = ViLU(D, ViLUConfig(hidden=(32,), attention_init="random", tie_kv=False))
    mask = torch.rand(6, C) < 0.6
    mask[:, 0] = True  # every row keeps at least one candidate
    mask[0] = torch.tensor([False, False, True, False, False])
    got = net(img, txt, mask)
    for i in range(6):
        ref = net(img[i:i + 1], txt[mask[i]])
        torch.testing.assert_close(got[i:i + 1], ref)
    # the masked argmax: a masked best class is never the prediction
    sims = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    best = sims.argmax(1)
    m = torch.ones(6, C, dtype=torch.bool)
    m[torch.arange(6), best] = False
    y = zero_shot_correct(img, txt, best.numpy(), m.numpy())
    assert not y.any() and zero_shot_correct(img, txt, best.numpy()).all()
    with pytest.raises(ValueError, match="row 2 has no valid candidate"):
        net(img, txt, torch.ones(6, C, dtype=torch.bool).index_fill_(0, torch.tensor([2]), 0))
    with pytest.raises(ValueError, match=r"shape \[6, 5\]"):
        net(img, txt, torch.ones(6, 4, dtype=torch.bool))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="ViLUConfig.setting"):
        ViLUConfig(setting="regions")
    with pytest.raises(ValueError, match="failure_weight"):
        ViLUConfig(failure_weight="median")
    with pytest.raises(ValueError, match="not divisible"):
        ViLU(D, ViLUConfig(num_heads=3))


# ------------------------------------------------------------------------- targets and loss


def test_failure_weight_and_split():
    y = np.array([True] * 30 + [False] * 10)
    assert failure_weight(y) == pytest.approx(math.log(1 + 3))
    with pytest.raises(ValueError, match="no failures"):
        failure_weight(np.ones(5, bool))
    tr, va = correctness_split(y, 0.2, seed=3)
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == 40
    assert (~y[va]).sum() == 2 and y[va].sum() == 6  # same failure share on both sides
    np.testing.assert_array_equal(va, correctness_split(y, 0.2, seed=3)[1])


def test_dataset_failure_weight_is_recorded_over_the_training_split():
    img, txt, labels = planted_world(300, seed=4)
    y = zero_shot_correct(img, txt, labels)
    cfg = ViLUConfig(**{**FAST, "epochs": 2})
    model = fit_vilu(img, txt, y, config=cfg, progress=False, device="cpu")
    tr, _ = correctness_split(y, cfg.val_fraction, cfg.seed)
    assert model.failure_weight == pytest.approx(math.log1p(y[tr].sum() / (~y[tr]).sum()))
    fixed = fit_vilu(img, txt, y, config=ViLUConfig(**{**FAST, "epochs": 1,
                                                       "failure_weight": 2.5}),
                     progress=False, device="cpu")
    assert fixed.failure_weight == 2.5
    batch = fit_vilu(img, txt, y, config=ViLUConfig(**{**FAST, "epochs": 1,
                                                       "failure_weight": "batch"}),
                     progress=False, device="cpu")
    assert batch.failure_weight is None


def test_caption_correct_brute_force():
    rng = np.random.default_rng(5)
    img, cap = rng.normal(size=(10, D)), rng.normal(size=(10, D))
    cap[:6] = img[:6] + 0.01 * rng.normal(size=(6, D))  # the first six match their caption
    got = caption_correct(img, cap, batch_size=4)
    for i in range(10):
        lo = (i // 4) * 4
        block = range(lo, min(lo + 4, 10))
        cos = [img[i] @ cap[j] / np.linalg.norm(img[i]) / np.linalg.norm(cap[j]) for j in block]
        assert got[i] == (int(np.argmax(cos)) == i - lo)
    assert got[:6].all()


# ------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def planted():
    img, txt, labels = planted_world(1200, seed=0)
    y = zero_shot_correct(img, txt, labels)
    model = fit_vilu(img[:800], txt, y[:800], config=ViLUConfig(**FAST), logit_scale=50.0,
                     model_id="planted-model", progress=False, device="cpu")
    return img, txt, labels, y, model


def test_training_separates_the_planted_failures(planted):
    img, txt, _, y, model = planted
    test_img, test_y = img[800:], y[800:]
    assert 0.15 < 1 - test_y.mean() < 0.5  # the planted failures exist
    p_fail = model.predict_failure(test_img, txt)
    vilu_auc = auroc(test_y, -p_fail)
    probs = torch.softmax(50.0 * F.normalize(torch.as_tensor(test_img), dim=-1)
                          @ F.normalize(torch.as_tensor(txt), dim=-1).T, dim=-1).numpy()
    msp_auc = auroc(test_y, msp(probs))
    assert vilu_auc > 0.95, vilu_auc
    assert msp_auc < 0.75, msp_auc  # confidence alone does not see the pattern
    assert model.val_auroc > 0.95 and 1 <= model.best_epoch <= len(model.history)
    np.testing.assert_allclose(p_fail, 1 / (1 + np.exp(model.predict_logits(test_img, txt))),
                               rtol=1e-6)


def test_same_seed_same_model_and_frozen_attention_stays_identity():
    img, txt, labels = planted_world(300, seed=6)
    y = zero_shot_correct(img, txt, labels)
    cfg = ViLUConfig(**{**FAST, "epochs": 3, "keep_attention_frozen": True, "dropout": 0.1})
    a = fit_vilu(img, txt, y, config=cfg, progress=False, device="cpu")
    b = fit_vilu(img, txt, y, config=cfg, progress=False, device="cpu")
    c = fit_vilu(img, txt, y, config=ViLUConfig(**{**FAST, "epochs": 3, "seed": 1}),
                 progress=False, device="cpu")
    np.testing.assert_array_equal(a.predict_logits(img, txt), b.predict_logits(img, txt))
    assert not np.allclose(a.predict_logits(img, txt), c.predict_logits(img, txt))
    torch.testing.assert_close(a.net.w_k.weight, torch.eye(D))
    torch.testing.assert_close(a.net.w_q.weight, torch.eye(D))
    assert not np.allclose(c.net.w_k.weight.detach().numpy(), np.eye(D))  # trainable otherwise
    # published warm-up: projections frozen for the first steps only (3 epochs x 4 steps here)
    warm = ViLUConfig(**{**FAST, "epochs": 3, "freeze_attention_steps": 100, "optimizer": "sgd"})
    d = fit_vilu(img, txt, y, config=warm, progress=False, device="cpu")
    torch.testing.assert_close(d.net.w_k.weight, torch.eye(D))
    assert d.net.w_k.weight.requires_grad  # frozen only during warm-up
    short = ViLUConfig(**{**FAST, "epochs": 3, "freeze_attention_steps": 2, "optimizer": "sgd"})
    e = fit_vilu(img, txt, y, config=short, progress=False, device="cpu")
    assert not torch.allclose(e.net.w_k.weight, torch.eye(D))


def test_save_load_round_trip_and_model_id_refusal(planted, tmp_path):
    img, txt, _, _, model = planted
    model.save(tmp_path / "vilu")
    meta = json.loads((tmp_path / "vilu.json").read_text())
    assert meta["model_id"] == "planted-model" and meta["config"]["hidden"] == [64, 32]
    back = ViLUModel.load(tmp_path / "vilu", expected_model_id="planted-model")
    np.testing.assert_array_equal(back.predict_logits(img, txt), model.predict_logits(img, txt))
    assert back.net.w_v is back.net.w_k and back.history == model.history
    with pytest.raises(ValueError, match="'planted-model'.*'other-model'"):
        ViLUModel.load(tmp_path / "vilu.json", expected_model_id="other-model")
    with pytest.raises(FileNotFoundError, match="missing"):
        ViLUModel.load(tmp_path / "nothing")


def test_caption_setting_trains_and_predicts():
    rng = np.random.default_rng(7)
    img = rng.normal(size=(400, D)).astype(np.float32)
    hard = rng.random(400) < 0.4  # captions of these images are mostly noise
    cap = img + np.where(hard[:, None], 3.0, 0.3) * rng.normal(size=(400, D)).astype(np.float32)
    cfg = ViLUConfig(**{**FAST, "epochs": 3, "setting": "captions", "batch_size": 32})
    model = fit_vilu(img, cap, config=cfg, progress=False, device="cpu")
    p = model.predict_failure(img, cap)
    assert p.shape == (400,) and np.all((p > 0) & (p < 1))
    with pytest.raises(ValueError, match="one caption per image"):
        model.predict_failure(img, cap[:10])


def test_evaluation_table_and_plot(planted, tmp_path):
    img, txt, _, y, model = planted
    conf = {"vilu": model.predict_logits(img[800:], txt), "msp": np.linspace(0, 1, 400)}
    table = evaluate_failure_prediction(y[800:], conf)
    assert list(table["method"]) == ["vilu", "msp"]
    assert {"auroc", "fpr_at_95tpr", "aupr_error", "aurc", "n", "failures"} <= set(table.columns)
    assert table.loc[0, "auroc"] == pytest.approx(auroc(y[800:], conf["vilu"]))
    png = risk_coverage_plot(y[800:], conf, tmp_path / "rc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------------- combine


def test_epig_combinations():
    epig = np.array([0.5, 0.1, 0.9, 0.3])
    p = np.array([0.2, 0.9, 0.1, 0.6])
    np.testing.assert_allclose(failure_weighted(epig, p), epig * p)
    np.testing.assert_allclose(failure_weighted(epig, p, power=0.0), epig)
    np.testing.assert_array_equal(top_failure_mask(p, 0.5), [False, True, False, True])
    np.testing.assert_array_equal(within_top_failures(epig, p, 0.5), [-np.inf, 0.1, -np.inf, 0.3])
    assert top_failure_mask(p, 0.01).sum() == 1  # ceil: never empty
    with pytest.raises(ValueError, match="probabilities"):
        failure_weighted(epig, p + 1)
    with pytest.raises(ValueError, match="fraction"):
        within_top_failures(epig, p, 0.0)


# ----------------------------------------------------------------------- pool and CLI


class IndexImages:
    """A duck-typed dataset of 1x1 images whose pixel encodes the item index."""

    def __init__(self, n: int, labels: np.ndarray, domains: list[str], splits: list[str]):
        self.name, self.description = "planted", {}
        self.classnames = [f"class{c}" for c in range(C)]
        self.items = pd.DataFrame({
            "sample_id": [f"img{i}" for i in range(n)], "path": [f"img{i}" for i in range(n)],
            "label": labels.astype(np.int64), "domain": domains, "split": splits,
        })

    def load_image(self, i: int) -> Image.Image:
        return Image.new("RGB", (1, 1), (i // 65536, (i // 256) % 256, i % 256))


class TableVLM:
    """A duck-typed VLM whose image activations are looked up from the pixel-coded index."""

    family, name, pretrained, checkpoint, device = "clip", "table", None, None, "cpu"
    precision = "fp32"
    preprocess_description = "index pixel"

    def __init__(self, image_act: np.ndarray, text_act: np.ndarray, model_id: str):
        self.model_id = model_id
        self.image_act, self.text_act = torch.as_tensor(image_act), torch.as_tensor(text_act)
        self.head = ProjectionHead(torch.eye(D), torch.eye(D), logit_scale=50.0)

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)

    def image_activations(self, pixels: torch.Tensor, **_):
        rgb = pixels[:, :, 0, 0].long()
        return self.image_act[rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]], None

    def class_text_activations(self, classnames, templates, **_) -> torch.Tensor:
        return self.text_act


@pytest.fixture(scope="module")
def planted_pool(tmp_path_factory):
    n = 900
    img, txt, labels = planted_world(n, seed=8)
    domains = ["source"] * 600 + ["target"] * 300
    splits = (["train"] * 500 + ["test"] * 100) + ["test"] * 300
    out = tmp_path_factory.mktemp("pool") / "planted"
    embed_dataset(IndexImages(n, labels, domains, splits), TableVLM(img, txt, "table-vlm"), out,
                  batch_size=128, shard_size=400, progress=False)
    return open_pool(out), img, txt, labels


def test_pool_training_scoring_and_refusal(planted_pool):
    pool, img, txt, labels = planted_pool
    model = fit_vilu_on_pool(pool, split="train", domain="source", config=ViLUConfig(**FAST),
                             device="cpu", progress=False)
    assert model.model_id == "table-vlm" and model.logit_scale == 50.0
    target = pool.indices(domain="target")
    scores = pool_failure_scores(model, pool, target, device="cpu")
    np.testing.assert_array_equal(scores.correct, zero_shot_correct(img[target], txt,
                                                                    labels[target]))
    assert set(scores.confidences) == {"vilu", "msp", "entropy", "doctor"}
    table = evaluate_failure_prediction(scores.correct, scores.confidences).set_index("method")
    assert table.loc["vilu", "auroc"] > 0.95 > table.loc["msp", "auroc"]
    p = failure_scores(model, pool, target, device="cpu")
    np.testing.assert_allclose(p, model.predict_failure(img[target], txt), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, failure_scores(model, (img[target], txt)), rtol=1e-5,
                               atol=1e-6)
    other = ViLUModel(model.net, model.config, "another-vlm", 50.0)
    with pytest.raises(ValueError, match="'another-vlm'.*'table-vlm'"):
        failure_scores(other, pool)


def test_bayesvlm_variance_baseline_on_pool(planted_pool):
    pool, img, txt, _ = planted_pool
    post = fit_posterior(pool.head, img, txt, mode="labels", model_id="table-vlm",
                         device="cpu", progress=False)
    model = ViLUModel(ViLU(D, ViLUConfig(hidden=(8,))), ViLUConfig(), "table-vlm", 50.0)
    rows = pool.indices(domain="target")[:50]
    scores = pool_failure_scores(model, pool, rows, posterior=post, device="cpu")
    mean, var = logit_moments(post, img[rows], txt)
    predicted = (img[rows] @ txt.T / np.linalg.norm(img[rows], axis=1, keepdims=True)).argmax(1)
    np.testing.assert_allclose(scores.confidences["bayesvlm_variance"],
                               -var.numpy()[np.arange(50), predicted], rtol=1e-5)
    post.model_id = "another-vlm"
    with pytest.raises(ValueError, match="posterior was fitted for model 'another-vlm'"):
        pool_failure_scores(model, pool, rows, posterior=post)


def test_cli_train_and_eval(planted_pool, tmp_path):
    pool = planted_pool[0]
    runner = CliRunner()
    model_path = tmp_path / "vilu"
    res = runner.invoke(app, ["vilu", "train", "--pool", str(pool.path), "--domain", "source",
                              "--out", str(model_path), "--epochs", "30", "--batch-size", "64",
                              "--seed", "1", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "validation AUROC" in res.output and (tmp_path / "vilu.safetensors").exists()
    _, img, txt, _ = planted_pool
    fit_posterior(pool.head, img, txt, mode="labels", model_id="table-vlm", device="cpu",
                  progress=False).save(tmp_path / "posterior")
    res = runner.invoke(app, ["vilu", "eval", "--pool", str(pool.path), "--model",
                              str(model_path), "--domain", "target", "--out",
                              str(tmp_path / "eval"), "--device", "cpu",
                              "--posterior", str(tmp_path / "posterior")])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "eval" / "failure_eval.parquet").set_index("method")
    assert list(table.index) == ["vilu", "msp", "entropy", "doctor", "bayesvlm_variance"]
    assert table.loc["vilu", "auroc"] > table.loc["msp", "auroc"]
    assert (tmp_path / "eval" / "risk_coverage.png").exists() and "AUROC" in res.output
    # a predictor trained for another model is refused, naming both ids
    ViLUModel(ViLU(D, ViLUConfig()), ViLUConfig(), "another-vlm", 50.0).save(tmp_path / "other")
    res = runner.invoke(app, ["vilu", "eval", "--pool", str(pool.path), "--model",
                              str(tmp_path / "other"), "--device", "cpu"])
    assert res.exit_code == 1 and "another-vlm" in res.output and "table-vlm" in res.output


def test_class_subset_pools_judge_correctness_among_the_subset(tmp_path):
    """ImageNet-R/A style: only the dataset's classes are candidates, as in evaluation."""
    from activevlm.evaluation import predict_zeroshot
    from tests.toy import toy_pool

    pool = toy_pool(tmp_path, class_subset=[0, 2, 3], per=6)
    assert pool.class_subset == [0, 2, 3]
    model = fit_vilu_on_pool(pool, split=None, config=ViLUConfig(**FAST), device="cpu",
                             progress=False)
    scores = pool_failure_scores(model, pool, device="cpu", baselines=False)
    pred = predict_zeroshot(pool)  # restricted to the subset by the evaluation layer
    assert list(pred.class_ids) == [0, 2, 3]
    np.testing.assert_array_equal(scores.correct,
                                  pred.probs["deterministic"].argmax(1) == pred.labels)
    subset_txt = pool.text_embeddings()[[0, 2, 3]]
    img = pool.image_embeddings()
    position = {0: 0, 2: 1, 3: 2}
    labels = np.array([position[y] for y in pool.items["label"]])
    np.testing.assert_array_equal(scores.correct, zero_shot_correct(img, subset_txt, labels))
