"""KFAC factors against the explicit per-sample GGN w.r.t. the projection weight (torch.func)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import hessian, jacrev

from activevlm.bayes.kfac import estimate_kfac, ggn_sum
from activevlm.models.head import ProjectionHead

D, D_IMG, D_TXT, N, C, BATCH = 4, 5, 3, 10, 6, 4


def make_head(bias: bool, seed: int = 0) -> ProjectionHead:
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    return ProjectionHead(
        r(D, D_IMG), r(D, D_TXT), 4.0,
        r(D) if bias else None, r(D) if bias else None, -1.5 if bias else None,
    )


def data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, D_IMG, generator=g, dtype=torch.float64),
            torch.randn(N, D_TXT, generator=g, dtype=torch.float64),
            torch.randn(C, D_TXT, generator=g, dtype=torch.float64),
            torch.randn(N, D, generator=g, dtype=torch.float64))


def aug(x: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1) if bias else x


def per_sample_ggn_H(W, a_aug, Y, s, loss, bias, label, residual=None):
    """Explicit GGN of one sample's loss w.r.t. ``W [D, d]``: Jᵀ ∇²ℓ J with torch.func, then
    the output factor H (the GGN is exactly (H ⊗ aaᵀ) for one sample; checked)."""

    def logits_of(Wf):
        g = Wf @ a_aug
        if residual is not None:
            g = g + residual
        out = s * Y @ (g / g.norm())
        return out + bias if bias is not None else out

    def loss_of(logits):
        if loss == "infonce":
            return -torch.log_softmax(logits, 0)[label]
        z = -torch.ones_like(logits)
        z[label] = 1.0
        return -F.logsigmoid(z * logits).sum()

    J = jacrev(logits_of)(W).reshape(Y.shape[0], -1)            # [C, D*d]
    Hl = hessian(loss_of)(logits_of(W))                          # [C, C]
    G = J.T @ Hl @ J                                             # [D*d, D*d]
    Dd, d = W.shape
    H = G.reshape(Dd, d, Dd, d).diagonal(dim1=1, dim2=3).sum(-1) / (a_aug @ a_aug)
    torch.testing.assert_close(G, torch.kron(H, torch.outer(a_aug, a_aug)),
                               rtol=1e-9, atol=1e-10)
    return H


def reference_factors(head, img, txt, cls, res, mode, loss):
    """Brute-force (A, B, N) per side following estimate_kfac's documented batching."""
    bias = head.image_bias is not None
    Wi = torch.cat([head.image_weight, head.image_bias[:, None]], 1) if bias else head.image_weight
    Wt = torch.cat([head.text_weight, head.text_bias[:, None]], 1) if bias else head.text_weight
    out = {"image": [0, 0, 0], "text": [0, 0, 0]}

    def add(side, W, a, Y, label, r=None):
        a_aug = aug(a[None], bias)[0]
        H = per_sample_ggn_H(W, a_aug, Y, head.logit_scale, loss, head.logit_bias, label, r)
        acc = out[side]
        acc[0] = acc[0] + torch.outer(a_aug, a_aug)
        acc[1] = acc[1] + H
        acc[2] += 1

    for start in range(0, N, BATCH):
        sl = slice(start, min(start + BATCH, N))
        g = head.image_embeddings(img[sl], res[sl])
        G_hat = F.normalize(g, dim=-1)
        t_b = txt[sl] if mode == "pairs" else cls
        Y_txt = F.normalize(head.text_embeddings(t_b), dim=-1)
        for i in range(g.shape[0]):
            add("image", Wi, img[sl][i], Y_txt, label=i % Y_txt.shape[0], r=res[sl][i])
        for j in range(t_b.shape[0]):
            add("text", Wt, t_b[j], G_hat, label=j % G_hat.shape[0])
    return {k: (A / math.sqrt(n), B / math.sqrt(n), n) for k, (A, B, n) in out.items()}


@pytest.mark.parametrize("mode", ["pairs", "labels"])
@pytest.mark.parametrize("loss", ["infonce", "sigmoid"])
def test_factors_equal_explicit_per_sample_ggn(mode, loss):
    bias = loss == "sigmoid"
    head = make_head(bias)
    img, txt, cls, res = data()
    res = res if bias else torch.zeros_like(res)
    fi, ft = estimate_kfac(head, img, txt if mode == "pairs" else cls, mode=mode, loss=loss,
                           batch_size=BATCH, image_residual=res, device="cpu",
                           dtype=torch.float64, progress=False)
    ref = reference_factors(head, img, txt, cls, res, mode, loss)
    for f, side, d in ((fi, "image", D_IMG), (ft, "text", D_TXT)):
        A, B, n = ref[side]
        assert f.num_samples == n
        assert f.has_bias == bias and f.loss == loss
        assert f.A.shape == (d + int(bias), d + int(bias))
        torch.testing.assert_close(f.A, A, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(f.B, B, rtol=1e-8, atol=1e-12)
    n_batches = math.ceil(N / BATCH)
    assert ft.num_samples == (N if mode == "pairs" else C * n_batches)


def test_chunking_numpy_input_and_loss_default():
    head = make_head(bias=True)
    img, txt, _, res = data()
    kw = dict(batch_size=BATCH, image_residual=res, device="cpu", dtype=torch.float64,
              progress=False)
    full = estimate_kfac(head, img, txt, **kw)
    chunked = estimate_kfac(head, img.numpy(), txt.numpy(),
                            chunk_elements=1, **{**kw, "image_residual": res.numpy()})
    assert full[0].loss == "sigmoid"                      # head has a logit bias
    for a, b in zip(full, chunked, strict=True):
        torch.testing.assert_close(a.A, b.A)
        torch.testing.assert_close(a.B, b.B)


def test_ggn_sum_is_psd_and_annihilates_the_embedding_direction():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(7, 6, generator=g, dtype=torch.float64)
    Y = F.normalize(torch.randn(9, 6, generator=g, dtype=torch.float64), dim=-1)
    for loss in ("infonce", "sigmoid"):
        H1 = ggn_sum(q[:1], Y, 10.0, loss, 0.5)
        # the loss depends on g only through its direction: H g = 0
        torch.testing.assert_close(H1 @ q[0], torch.zeros(6, dtype=torch.float64),
                                   atol=1e-10, rtol=0)
        assert torch.linalg.eigvalsh(ggn_sum(q, Y, 10.0, loss, 0.5)).min() > -1e-10


def test_clear_errors():
    head = make_head(bias=False)
    img, txt, cls, _ = data()
    with pytest.raises(ValueError, match="text_act must have shape"):
        estimate_kfac(head, img, img, progress=False, device="cpu")
    with pytest.raises(ValueError, match="image_act has 10, text_act has 6"):
        estimate_kfac(head, img, np.zeros((6, D_TXT)), progress=False, device="cpu")
    with pytest.raises(ValueError, match="mode must be one of"):
        estimate_kfac(head, img, txt, mode="captions", progress=False, device="cpu")
