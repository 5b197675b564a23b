"""Fine-tuning the projections (activevlm.finetune.projection) and refitting the posterior
(activevlm.finetune.refit) on small synthetic problems with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activevlm.bayes.kfac import estimate_kfac
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.bayes.probcosine import logit_moments
from activevlm.finetune import (
    FinetuneConfig,
    RefitConfig,
    combine_factor,
    finetune_head,
    refit_posterior,
    stratified_split,
)
from activevlm.finetune.projection import auto_batch_size
from activevlm.models.head import ProjectionHead

D, D_IMG, D_TXT, C = 16, 40, 24, 8
PLANTED = {0: 1, 1: 2, 2: 0}  # target-domain images of class c look like class PLANTED[c]


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class World:
    """A random head and class prompts, and images whose embedding direction under the head
    is their class (source domain) or, for the planted classes, another class (target
    domain). The true class is also written into the head's null space, so a fine-tuned
    image projection can recover it while the zero-shot head cannot."""

    def __init__(self, seed: int = 0, siglip: bool = False) -> None:
        g = self.g = torch.Generator().manual_seed(seed)
        self.siglip = siglip
        self.head = ProjectionHead(
            torch.randn(D, D_IMG, generator=g) / D_IMG ** 0.5,
            torch.randn(D, D_TXT, generator=g) / D_TXT ** 0.5,
            20.0,
            0.1 * torch.randn(D, generator=g) if siglip else None,
            0.1 * torch.randn(D, generator=g) if siglip else None,
            -5.0 if siglip else None,
        )
        self.text = torch.randn(C, D_TXT, generator=g)
        self.class_dirs = F.normalize(self.head.text_embeddings(self.text), dim=-1)
        null = torch.linalg.svd(self.head.image_weight).Vh[D:].T  # [D_IMG, D_IMG - D]
        self.null, self.pinv = null, torch.linalg.pinv(self.head.image_weight)
        self.codes = torch.randn(C, D_IMG - D, generator=g)

    def sample(self, n: int, target: bool = True, shift: float = 0.0):
        """``(act [n, D_IMG], labels [n], residual [n, D] | None)``; ``shift`` moves the
        activations along a fixed direction (a distinct region of activation space)."""
        g = self.g
        y = torch.randint(0, C, (n,), generator=g)
        src = torch.tensor([PLANTED.get(int(c), int(c)) if target else int(c) for c in y])
        res = 0.2 * torch.randn(n, D, generator=g) if self.siglip else None
        e = self.class_dirs[src] + 0.25 * torch.randn(n, D, generator=g)
        if res is not None:
            e = e - res - self.head.image_bias
        codes = self.codes[y] + 0.5 * torch.randn(n, D_IMG - D, generator=g)
        act = e @ self.pinv.T + codes @ self.null.T
        act = act + shift * torch.ones(D_IMG) / D_IMG ** 0.5
        return act, y, res


def reference_eval(head: ProjectionHead, act, labels, text, residual=None):
    """Cross-entropy and accuracy computed directly from ProjectionHead.logits."""
    logits = head.logits(head.image_embeddings(act, residual), head.text_embeddings(text))
    return (float(F.cross_entropy(logits, labels)),
            float((logits.argmax(1) == labels).float().mean()))


# ----------------------------------------------------------------------------- fine-tuning


def test_finetuning_fixes_the_planted_classes_and_beats_zero_shot():
    w = World(0)
    act, y, _ = w.sample(400)
    v_act, v_y, _ = w.sample(1000)
    res = finetune_head(w.head, act, y, w.text, val=(v_act, v_y),
                        config=FinetuneConfig(lr=1e-2), progress=False)
    zs_loss, zs_acc = reference_eval(w.head, v_act, v_y, w.text)
    ft_loss, ft_acc = reference_eval(res.head, v_act, v_y, w.text)
    assert zs_acc < 0.7                       # 3 of 8 classes are systematically wrong
    assert ft_acc > 0.95 and ft_acc > zs_acc + 0.25
    assert ft_loss < 0.1 * zs_loss
    h = res.history
    # the history evaluates exactly what ProjectionHead.logits gives
    assert h.loc[0, "val_loss"] == pytest.approx(zs_loss, rel=1e-5)
    assert h.loc[0, "val_acc"] == pytest.approx(zs_acc)
    assert h.loc[res.best_epoch, "val_loss"] == pytest.approx(ft_loss, rel=1e-5)
    assert h.loc[res.best_epoch, "val_acc"] == pytest.approx(ft_acc)
    assert list(h.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert res.head.logit_scale == w.head.logit_scale
    assert res.head.metadata["finetune"]["best_epoch"] == res.best_epoch
    assert res.val_indices.size == 0 and res.train_indices.size == 400


def test_few_labels_get_enough_steps_with_the_automatic_batch_size():
    """40 labels: the automatic batch (8) trains the head in 10 epochs; one fixed batch of 256
    is a single step per epoch and stays near zero-shot (the demo benchmark's old bug)."""
    w = World(1)
    act, y, _ = w.sample(40)
    v_act, v_y, _ = w.sample(1000)
    assert auto_batch_size(40) == 8 and auto_batch_size(10**5) == 256
    accs = {}
    for bs in (None, 256):
        cfg = FinetuneConfig(max_epochs=10, batch_size=bs)  # the default lr, 1e-3
        res = finetune_head(w.head, act, y, w.text, val=(v_act, v_y), config=cfg,
                            progress=False)
        accs[bs] = reference_eval(res.head, v_act, v_y, w.text)[1]
    zs_acc = reference_eval(w.head, v_act, v_y, w.text)[1]
    assert accs[None] > accs[256] + 0.1 and accs[None] > zs_acc + 0.2


def test_early_stopping_restores_the_best_epoch_of_an_overfitting_run():
    w = World(0)
    act, y, _ = w.sample(24)
    g = torch.Generator().manual_seed(5)
    noisy = y.clone()
    flip = torch.rand(24, generator=g) < 0.4          # 40 % label noise on 24 labels
    noisy[flip] = torch.randint(0, C, (int(flip.sum()),), generator=g)
    v_act, v_y, _ = w.sample(1000)
    cfg = FinetuneConfig(lr=3e-2, l2_to_init=0.0, batch_size=8, patience=5, max_epochs=60)
    res = finetune_head(w.head, act, noisy, w.text, val=(v_act, v_y), config=cfg,
                        progress=False)
    h = res.history
    best = int(h["val_loss"].idxmin())
    assert res.best_epoch == best > 0
    assert len(h) == best + cfg.patience + 1          # stopped after `patience` worse epochs
    assert len(h) - 1 < cfg.max_epochs
    assert (h["val_loss"].iloc[best + 1:] > h.loc[best, "val_loss"]).all()
    assert h["train_loss"].iloc[-1] < h.loc[best, "train_loss"]   # it was overfitting
    loss, acc = reference_eval(res.head, v_act, v_y, w.text)
    assert loss == pytest.approx(h.loc[best, "val_loss"], rel=1e-5)
    assert acc == pytest.approx(h.loc[best, "val_acc"])


def test_a_run_that_cannot_beat_the_start_returns_the_starting_head():
    w = World(0)
    act, y, _ = w.sample(64, target=False)
    v_act, v_y, _ = w.sample(200, target=False)
    wrong = (y + 1) % C                                # every training label wrong
    res = finetune_head(w.head, act, wrong, w.text, val=(v_act, v_y),
                        config=FinetuneConfig(lr=1e-2, patience=2), progress=False)
    assert res.best_epoch == 0
    assert torch.equal(res.head.image_weight, w.head.image_weight)


def test_same_seed_same_weights_and_other_seed_other_split():
    w = World(1)
    act, y, _ = w.sample(300)
    cfg = FinetuneConfig(lr=5e-3, max_epochs=8, batch_size=32, seed=3)
    a = finetune_head(w.head, act, y, w.text, config=cfg, progress=False)
    b = finetune_head(w.head, act.numpy(), y.numpy(), w.text.numpy(), config=cfg,
                      progress=False)
    c = finetune_head(w.head, act, y, w.text, config=FinetuneConfig(
        lr=5e-3, max_epochs=8, batch_size=32, seed=4), progress=False)
    assert torch.equal(a.head.image_weight, b.head.image_weight)
    assert a.history.equals(b.history)
    np.testing.assert_array_equal(a.val_indices, b.val_indices)
    assert not np.array_equal(a.val_indices, c.val_indices)
    assert not torch.equal(a.head.image_weight, c.head.image_weight)
    assert a.val_indices.size == pytest.approx(0.2 * 300, abs=C)


def test_train_text_flag_controls_the_text_projection():
    w = World(2, siglip=True)
    act, y, r = w.sample(200)
    before = w.head.image_weight.clone()
    frozen = finetune_head(w.head, act, y, w.text, residual=r,
                           config=FinetuneConfig(lr=1e-2, max_epochs=5), progress=False)
    assert torch.equal(frozen.head.text_weight, w.head.text_weight)
    assert torch.equal(frozen.head.text_bias, w.head.text_bias)
    assert not torch.equal(frozen.head.image_weight, w.head.image_weight)
    assert torch.equal(w.head.image_weight, before)    # the input head is not modified
    both = finetune_head(w.head, act, y, w.text, residual=r,
                         config=FinetuneConfig(lr=1e-2, max_epochs=5, train_text=True),
                         progress=False)
    assert not torch.equal(both.head.text_weight, w.head.text_weight)
    assert not torch.equal(both.head.text_bias, w.head.text_bias)


def test_siglip_bias_and_residual_path():
    w = World(3, siglip=True)
    act, y, r = w.sample(400)
    v_act, v_y, v_r = w.sample(600)
    res = finetune_head(w.head, act, y, w.text, residual=r, val=(v_act, v_y, v_r),
                        config=FinetuneConfig(lr=1e-2), progress=False)
    zs_loss, zs_acc = reference_eval(w.head, v_act, v_y, w.text, v_r)
    no_res_loss, _ = reference_eval(w.head, v_act, v_y, w.text)
    assert res.history.loc[0, "val_loss"] == pytest.approx(zs_loss, rel=1e-5)
    assert abs(no_res_loss - zs_loss) > 1e-2          # the residual matters here
    ft_loss, ft_acc = reference_eval(res.head, v_act, v_y, w.text, v_r)
    assert ft_loss == pytest.approx(res.history.loc[res.best_epoch, "val_loss"], rel=1e-5)
    assert zs_acc < 0.7 and ft_acc > 0.9
    assert not torch.equal(res.head.image_bias, w.head.image_bias)
    assert res.head.logit_bias == w.head.logit_bias == -5.0
    assert res.head.logit_scale == w.head.logit_scale
    with pytest.raises(ValueError, match="residual"):
        finetune_head(w.head, act, y, w.text, residual=r, val=(v_act, v_y), progress=False)


def test_l2_to_init_keeps_the_weights_closer():
    w = World(4)
    act, y, _ = w.sample(40)
    dist = []
    for strength in (0.0, 10.0):
        cfg = FinetuneConfig(lr=1e-2, max_epochs=20, batch_size=8, val_fraction=0.0,
                             l2_to_init=strength)
        res = finetune_head(w.head, act, y, w.text, config=cfg, progress=False)
        assert res.best_epoch == 20 and res.history["val_loss"].isna().all()
        dist.append(float((res.head.image_weight - w.head.image_weight).norm()))
    assert dist[1] < 0.5 * dist[0]


def test_stratified_split():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    again = stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(val, again[1])
    assert stratified_split(labels, 0.0)[1].size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0)


def test_input_errors_name_the_problem():
    w = World(0)
    act, y, _ = w.sample(20)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\).*found 8"):
        finetune_head(w.head, act, torch.full((20,), C), w.text, progress=False)
    with pytest.raises(ValueError, match="image_act must have shape"):
        finetune_head(w.head, act[:, :5], y, w.text, progress=False)
    with pytest.raises(ValueError, match="FinetuneConfig.lr"):
        FinetuneConfig(lr=0.0)


# ----------------------------------------------------------------------------------- refit

BATCH = 50


def fitted(world: World, act, residual=None) -> BayesVLMPosterior:
    return BayesVLMPosterior.fit(world.head, act, world.text, mode="labels", batch_size=BATCH,
                                 image_residual=residual, prior_precision=(2.0, 3.0),
                                 device="cpu", progress=False)


def perturbed(head: ProjectionHead, seed: int = 9) -> ProjectionHead:
    g = torch.Generator().manual_seed(seed)

    def p(t):
        return None if t is None else t + 0.05 * torch.randn(t.shape, generator=g)

    return ProjectionHead(p(head.image_weight), p(head.text_weight), head.logit_scale,
                          p(head.image_bias), p(head.text_bias), head.logit_bias)


def test_refit_none_and_recentre():
    w = World(5, siglip=True)
    act, _, r = w.sample(100, target=False)
    post = fitted(w, act, r)
    new = perturbed(w.head)
    assert refit_posterior(post, new, config=RefitConfig(mode="none")) is post
    rec = refit_posterior(post, new, config=RefitConfig(mode="recentre"))
    assert rec.head is new
    for name, W_new in (("image", torch.cat([new.image_weight, new.image_bias[:, None]], 1)),
                        ("text", torch.cat([new.text_weight, new.text_bias[:, None]], 1))):
        old_m, new_m = getattr(post, name), getattr(rec, name)
        assert torch.equal(new_m.W_map, W_new)
        assert not torch.equal(new_m.W_map, old_m.W_map)
        assert torch.equal(new_m.A, old_m.A) and torch.equal(new_m.B, old_m.B)
        assert new_m.prior_precision == old_m.prior_precision
        assert new_m.pseudo_count == old_m.pseudo_count and new_m.has_bias == old_m.has_bias
        assert torch.equal(new_m.B_inv, old_m.B_inv)
    assert rec.data_description["refits"][-1]["mode"] == "recentre"
    wrong_scale = ProjectionHead(new.image_weight, new.text_weight, 10.0, new.image_bias,
                                 new.text_bias, new.logit_bias)
    with pytest.raises(ValueError, match="logit_scale"):
        refit_posterior(post, wrong_scale, config=RefitConfig(mode="recentre"))


@pytest.mark.parametrize("siglip", [False, True])
def test_update_equals_the_factors_of_the_union(siglip):
    """Old factors from 100 images (2 class batches) plus an update on 70 labelled images
    equal one labels-mode fit on all 170 (√N convention, same head and class batches)."""
    w = World(6, siglip=siglip)
    a1, _, r1 = w.sample(100, target=False)
    a2, _, r2 = w.sample(70)
    post = fitted(w, a1, r1)
    cfg = RefitConfig(mode="recentre+update", reoptimize_prior=False, batch_size=BATCH,
                      device="cpu")
    upd = refit_posterior(post, w.head, a2, w.text, image_residual=r2, config=cfg,
                          progress=False)
    union_r = None if r1 is None else torch.cat([r1, r2])
    img_f, txt_f = estimate_kfac(w.head, torch.cat([a1, a2]), w.text, mode="labels",
                                 batch_size=BATCH, image_residual=union_r, device="cpu",
                                 dtype=torch.float64, progress=False)
    for m, f in ((upd.image, img_f), (upd.text, txt_f)):
        for got, want in ((m.A, f.A), (m.B, f.B)):
            torch.testing.assert_close(got.double(), want, rtol=1e-5,
                                       atol=1e-6 * float(want.abs().max()))
    assert upd.image.prior_precision == 2.0 and upd.text.prior_precision == 3.0
    desc = upd.data_description
    assert desc["image_factors"]["num_samples"] == 170 == img_f.num_samples
    assert desc["text_factors"]["num_samples"] == txt_f.num_samples == C * 4
    # λ re-optimised by the evidence = the optimum of the union posterior
    reopt = refit_posterior(post, w.head, a2, w.text, image_residual=r2, progress=False,
                            config=RefitConfig(batch_size=BATCH, device="cpu"))
    union = BayesVLMPosterior.from_head(w.head, img_f, txt_f)
    for got, want in ((reopt.image, union.image), (reopt.text, union.text)):
        assert got.prior_precision == pytest.approx(want.prior_precision, rel=1e-3)


def test_combine_factor_is_the_sum_rescaled():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(30, 4, generator=g, dtype=torch.float64), torch.randn(
        12, 4, generator=g, dtype=torch.float64)
    A = combine_factor(x1.T @ x1 / math.sqrt(30), 30, x2.T @ x2 / math.sqrt(12), 12)
    x = torch.cat([x1, x2])
    torch.testing.assert_close(A, x.T @ x / math.sqrt(42))
    with pytest.raises(ValueError, match="shapes"):
        combine_factor(torch.eye(3), 1, torch.eye(4), 1)


def test_update_shrinks_predictive_variance_on_the_labelled_region():
    w = World(7)
    a1, _, _ = w.sample(200, target=False)
    a2, y2, _ = w.sample(150, shift=3.0)               # labelled target data, elsewhere
    post = fitted(w, a1)
    ft = finetune_head(w.head, a2, y2, w.text, config=FinetuneConfig(lr=1e-2, max_epochs=10),
                       progress=False)
    rec = refit_posterior(post, ft.head, config=RefitConfig(mode="recentre"))
    upd = refit_posterior(post, ft.head, a2, w.text, progress=False, config=RefitConfig(
        reoptimize_prior=False, batch_size=BATCH, device="cpu"))
    probe, _, _ = w.sample(100, shift=3.0)             # fresh points from the same region
    _, var_rec = logit_moments(rec, probe, w.text)
    _, var_upd = logit_moments(upd, probe, w.text)
    assert (var_upd < var_rec).all()
    # the image side, where the new data lives: v(a) = ãᵀÃ⁻¹ã falls to ~40 %
    _, v_rec = rec.image.embedding_moments(probe)
    _, v_upd = upd.image.embedding_moments(probe)
    assert (v_upd < v_rec).all() and float((v_upd / v_rec).mean()) < 0.6


def test_update_needs_the_old_sample_count():
    w = World(8)
    a1, _, _ = w.sample(100, target=False)
    a2, _, _ = w.sample(30)
    post = fitted(w, a1)
    bare = BayesVLMPosterior(post.image, post.text, post.head, None, {"source": "files"})
    with pytest.raises(ValueError, match="prior_num_samples"):
        refit_posterior(bare, w.head, a2, w.text, progress=False,
                        config=RefitConfig(device="cpu", batch_size=BATCH))
    given = refit_posterior(bare, w.head, a2, w.text, progress=False, config=RefitConfig(
        device="cpu", batch_size=BATCH, prior_num_samples=(100, 2 * C),
        reoptimize_prior=False))
    known = refit_posterior(post, w.head, a2, w.text, progress=False, config=RefitConfig(
        device="cpu", batch_size=BATCH, reoptimize_prior=False))
    torch.testing.assert_close(given.image.A, known.image.A)
    torch.testing.assert_close(given.text.B, known.text.B)
    with pytest.raises(ValueError, match="image_act"):
        refit_posterior(post, w.head, config=RefitConfig())
