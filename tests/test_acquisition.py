"""Heuristic registry and closed forms, joint draws vs explicit per-draw heads, streaming."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from activevlm.acquisition import (
    get_heuristic,
    list_heuristics,
    register_heuristic,
    score_pool,
)
from activevlm.acquisition.heuristics import _REGISTRY
from activevlm.bayes.draws import JointDraws
from activevlm.models.head import ProjectionHead

D, D_IMG, D_TXT, C, K = 8, 6, 5, 4, 3


def make_head(siglip: bool, seed: int = 0) -> ProjectionHead:
    g = torch.Generator().manual_seed(seed)
    return ProjectionHead(
        image_weight=torch.randn(D, D_IMG, generator=g),
        text_weight=torch.randn(D, D_TXT, generator=g),
        logit_scale=10.0,
        image_bias=torch.randn(D, generator=g) if siglip else None,
        text_bias=torch.randn(D, generator=g) if siglip else None,
        logit_bias=-3.0 if siglip else None,
    )


def weight_draws(head: ProjectionHead, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[k, D, d(+1)]`` draws around the head's weights, bias as the last column."""
    g = torch.Generator().manual_seed(seed)

    def stack(w, b):
        full = w if b is None else torch.cat([w, b[:, None]], 1)
        return full + 0.3 * torch.randn(k, *full.shape, generator=g)

    return stack(head.image_weight, head.image_bias), stack(head.text_weight, head.text_bias)


def explicit_probs(head, img_w, txt_w, act, text_act, residual=None) -> torch.Tensor:
    """One ProjectionHead per draw, evaluated with the head's own code: ``[K, N, C]``.

    CLIP: softmax over classes; SigLIP: per-class sigmoids normalised over classes."""
    out = []
    for wi, wt in zip(img_w, txt_w, strict=True):
        bias = head.image_bias is not None
        h = ProjectionHead(
            wi[:, :D_IMG], wt[:, :D_TXT], head.logit_scale,
            wi[:, D_IMG] if bias else None, wt[:, D_TXT] if bias else None, head.logit_bias,
        )
        logits = h.logits(h.image_embeddings(act, residual), h.text_embeddings(text_act))
        if head.logit_bias is None:
            out.append(torch.softmax(logits, -1))
        else:
            q = torch.sigmoid(logits)
            out.append(q / q.sum(-1, keepdim=True))
    return torch.stack(out)


# --- registry and closed forms -------------------------------------------------------------

def test_registry_lists_and_rejects_unknown_names():
    assert {"random", "entropy", "margin", "bald", "epig", "vilu"} <= set(list_heuristics())
    with pytest.raises(KeyError, match="available: .*bald"):
        get_heuristic("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_heuristic("bald")(lambda p: p)
    with pytest.raises(ValueError, match="unknown heuristic inputs"):
        register_heuristic("x", requires=("labels",))


def test_register_custom_heuristic():
    @register_heuristic("test-max-prob")
    def least_confidence(probs):
        return 1 - probs.mean(0).max(-1).values

    try:
        p = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]])
        torch.testing.assert_close(get_heuristic("test-max-prob")(p), torch.tensor([0.1, 0.5]))
    finally:
        del _REGISTRY["test-max-prob"]


def test_entropy_margin_bald_closed_forms():
    uniform = torch.full((1, 1, 4), 0.25)
    onehot = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    ent, mar, bald = (get_heuristic(n) for n in ("entropy", "margin", "bald"))
    torch.testing.assert_close(ent(uniform), torch.tensor([math.log(4)]))
    torch.testing.assert_close(ent(onehot), torch.tensor([0.0]))  # 0 log 0 = 0, no NaN
    torch.testing.assert_close(mar(uniform), torch.tensor([1.0]))
    torch.testing.assert_close(mar(onehot), torch.tensor([0.0]))
    # two confident draws that disagree: predictive entropy log 2, BALD log 2
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    torch.testing.assert_close(bald(disagree), torch.tensor([math.log(2)]))
    torch.testing.assert_close(ent(disagree), torch.tensor([math.log(2)]))
    # identical draws carry no information about the weights
    same = torch.softmax(torch.randn(1, 5, 3), -1).expand(4, 5, 3)
    torch.testing.assert_close(bald(same), torch.zeros(5), atol=1e-6, rtol=0)
    # margin ranks the smaller gap first
    p = torch.tensor([[[0.6, 0.3, 0.1], [0.45, 0.44, 0.11]]])
    assert mar(p)[1] > mar(p)[0]


def test_heuristic_inputs_are_checked():
    p = torch.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match="needs target_probs"):
        get_heuristic("epig")(p)
    with pytest.raises(ValueError, match="needs generator"):
        get_heuristic("random")(p)
    with pytest.raises(ValueError, match=r"\[K, N, C\]"):
        get_heuristic("entropy")(p[0])
    with pytest.raises(ValueError, match="shape \\[3\\]"):
        get_heuristic("vilu")(p, external_scores=torch.zeros(4))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        get_heuristic("vilu")(p, external_scores=torch.tensor([0.1, 1.5, 0.0]))


def test_random_is_seeded():
    p = torch.empty(0, 100, 0)
    a = get_heuristic("random")(p, generator=torch.Generator().manual_seed(3))
    b = get_heuristic("random")(p, generator=torch.Generator().manual_seed(3))
    c = get_heuristic("random")(p, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (100,) and a.min() >= 0 and a.max() < 1


# --- joint draws ---------------------------------------------------------------------------

@pytest.mark.parametrize("siglip", [False, True])
def test_joint_draws_match_explicit_heads(siglip):
    head = make_head(siglip)
    img_w, txt_w = weight_draws(head, K, seed=1)
    g = torch.Generator().manual_seed(2)
    act, text_act = torch.randn(11, D_IMG, generator=g), torch.randn(C, D_TXT, generator=g)
    residual = torch.randn(11, D, generator=g) if siglip else None
    draws = JointDraws.from_weights(img_w, txt_w, text_act.numpy(), head, device="cpu")
    expected = explicit_probs(head, img_w, txt_w, act, text_act, residual)
    torch.testing.assert_close(draws.probs(act.numpy(), residual), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(draws.probs_chunked(act, residual, chunk_size=4), expected,
                               atol=1e-5, rtol=0)


def test_map_head_is_one_draw():
    """Logits (SigLIP bias included) of the deterministic head, as one draw."""
    head = make_head(siglip=True)
    g = torch.Generator().manual_seed(5)
    act, text_act = torch.randn(7, D_IMG, generator=g), torch.randn(C, D_TXT, generator=g)
    draws = JointDraws.from_head(head, text_act, device="cpu")
    expected = head.logits(head.image_embeddings(act), head.text_embeddings(text_act))
    assert draws.num_draws == 1
    torch.testing.assert_close(draws.logits(act)[0], expected, atol=1e-5, rtol=0)


def test_from_posterior_uses_joint_samples():
    head = make_head(siglip=False)
    img_w, txt_w = weight_draws(head, K, seed=9)
    calls = []

    def sample(k, generator):
        calls.append((k, generator))
        return SimpleNamespace(image=img_w[:k], text=txt_w[:k])

    post = SimpleNamespace(head=head, sample=sample)
    gen = torch.Generator().manual_seed(0)
    text_act = torch.randn(C, D_TXT)
    draws = JointDraws.from_posterior(post, text_act, 2, gen, device="cpu")
    assert draws.num_draws == 2 and calls == [(2, gen)]
    act = torch.randn(3, D_IMG)
    torch.testing.assert_close(draws.probs(act),
                               explicit_probs(head, img_w[:2], txt_w[:2], act, text_act),
                               atol=1e-5, rtol=0)


def test_joint_draws_validate_shapes():
    head = make_head(siglip=True)
    img_w, txt_w = weight_draws(head, K, seed=1)
    text_act = torch.randn(C, D_TXT)
    with pytest.raises(ValueError, match="image_weights must have shape"):
        JointDraws.from_weights(img_w[..., :D_IMG], txt_w, text_act, head, device="cpu")
    with pytest.raises(ValueError, match="joint draws come in pairs"):
        JointDraws.from_weights(img_w, txt_w[:2], text_act, head, device="cpu")
    draws = JointDraws.from_weights(img_w, txt_w, text_act, head, device="cpu")
    with pytest.raises(ValueError, match=f"activations must have shape \\[n, {D_IMG}\\]"):
        draws.probs(torch.randn(3, D_IMG + 1))


# --- streaming -----------------------------------------------------------------------------

@pytest.fixture()
def pool_setup():
    head = make_head(siglip=True, seed=3)
    img_w, txt_w = weight_draws(head, K, seed=4)
    g = torch.Generator().manual_seed(6)
    text_act = torch.randn(C, D_TXT, generator=g)
    pool = np.asarray(torch.randn(53, D_IMG, generator=g))
    residual = np.asarray(torch.randn(53, D, generator=g))
    target = torch.randn(9, D_IMG, generator=g)
    draws = JointDraws.from_weights(img_w, txt_w, text_act, head, device="cpu")
    return draws, pool, residual, target


@pytest.mark.parametrize("name", ["entropy", "margin", "bald", "epig"])
def test_score_pool_streams_to_the_unchunked_result(pool_setup, name):
    draws, pool, residual, target = pool_setup
    tp = draws.probs_chunked(target, residual=torch.zeros(9, D))
    kwargs = {"target_probs": tp} if name == "epig" else {}
    scores = score_pool(draws, pool, name, residual=residual, chunk_size=7, progress=False,
                        **kwargs)
    full = get_heuristic(name)(draws.probs(pool, residual), **kwargs)
    assert scores.shape == (53,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, full.double().numpy(), atol=1e-6, rtol=0)


def test_score_pool_random_and_vilu(pool_setup):
    draws, pool, residual, _ = pool_setup
    a = score_pool(draws, pool, "random", generator=torch.Generator().manual_seed(1),
                   progress=False)
    b = score_pool(draws, pool, "random", generator=torch.Generator().manual_seed(1),
                   chunk_size=5, progress=False)
    np.testing.assert_array_equal(a, b)
    fail = np.linspace(0, 1, 53)
    np.testing.assert_allclose(score_pool(draws, pool, "vilu", external_scores=fail,
                                          progress=False), fail)


def test_score_pool_rejects_targets_from_other_draws(pool_setup):
    draws, pool, _, _ = pool_setup
    with pytest.raises(ValueError, match="same draws"):
        score_pool(draws, pool, "epig", target_probs=torch.full((K + 1, 5, C), 0.25),
                   progress=False)
