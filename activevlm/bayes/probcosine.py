"""Predictive distribution of the logits under the projection posterior (MATH.md section 2).

Under the KFAC Laplace posterior the embeddings are Gaussian: ``g ~ N(mu_g, v(a) B_img^-1)``
and ``h ~ N(mu_h, v(t) B_txt^-1)``, independent. ProbCosine approximates the moments of
``cos(g, h)`` with ``S = |mu|^2 + tr(Sigma)`` (expected squared norm)::

    E[cos]   ~ mu_g^T mu_h / sqrt(S_g S_h)
    Var[cos] ~ (mu_g^T Sigma_h mu_g + mu_h^T Sigma_g mu_h + tr(Sigma_g Sigma_h)) / (S_g S_h)

Variants, same cost (matrix products only, no per-pair loops):

- ``"full"``: the full ``B^-1``; per-image ``mu_g^T B_txt^-1 mu_g``, per-class
  ``mu_h^T B_img^-1 mu_h`` and ``tr(B_img^-1 B_txt^-1)`` once.
- ``"diag"``: BayesVLM's approximation, only the diagonals of ``B^-1`` in the variance
  (``S`` uses the trace, identical in both variants).

Logits are ``s cos + b``: mean ``s E[cos] + b``, variance ``s^2 Var[cos]``.

Class probabilities (``link``):

- ``"softmax"`` (CLIP): ``p = softmax(m / sqrt(1 + pi/8 v))``.
- ``"sigmoid"`` (SigLIP): per class ``q_c = sigmoid(m_c / sqrt(1 + pi/8 v_c))``, the probit
  approximation of ``E[sigmoid(logit_c)]``. SigLIP's per-class sigmoids do not sum to one;
  zero-shot classification normalises them, ``p_c = q_c / sum_j q_j`` (pass
  ``normalize=False`` for the raw per-class probabilities). The Monte Carlo path applies the
  same normalisation per draw.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from activevlm.bayes.draws import JointDraws
from activevlm.models.links import Link, link_for, link_probs
from activevlm.utils.tensors import row_chunks, to_tensor
from activevlm.utils.validation import check_nonempty, check_same_length

Variant = Literal["full", "diag"]

DEFAULT_CHUNK = 4096


def cosine_moments(
    mu_g: torch.Tensor,
    v_g: torch.Tensor,
    mu_h: torch.Tensor,
    v_h: torch.Tensor,
    B_img_inv: torch.Tensor,
    B_txt_inv: torch.Tensor,
    variant: Variant = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """ProbCosine on plain tensors: ``(E[cos] [N, C], Var[cos] [N, C])``.

    ``mu_g [N, D]``, ``v_g [N]`` (image covariance ``v_g[n] * B_img_inv``), ``mu_h [C, D]``,
    ``v_h [C]``, ``B_img_inv``/``B_txt_inv [D, D]``.
    """
    return _TextSide(mu_h, v_h, B_img_inv, B_txt_inv, variant).moments(mu_g, v_g)


class _TextSide:
    """Everything that depends only on the classes, computed once and reused per image chunk."""

    def __init__(self, mu_h, v_h, B_img_inv, B_txt_inv, variant: Variant) -> None:
        if variant not in ("full", "diag"):
            raise ValueError(f"variant must be 'full' or 'diag', got {variant!r}")
        self.variant = variant
        self.mu_h, self.v_h = mu_h, v_h
        self.tr_img = torch.diagonal(B_img_inv).sum()
        self.S_h = (mu_h * mu_h).sum(-1) + v_h * torch.diagonal(B_txt_inv).sum()  # [C]
        if variant == "full":
            self.B_txt_inv = B_txt_inv
            self.q_h = ((mu_h @ B_img_inv) * mu_h).sum(-1)  # mu_h^T B_img^-1 mu_h, [C]
            self.tr_cross = (B_img_inv * B_txt_inv.T).sum()  # tr(B_img^-1 B_txt^-1)
        else:
            d_img, d_txt = torch.diagonal(B_img_inv), torch.diagonal(B_txt_inv)
            self.d_txt = d_txt
            self.q_h = (mu_h * mu_h) @ d_img
            self.tr_cross = (d_img * d_txt).sum()

    def moments(self, mu_g: torch.Tensor, v_g: torch.Tensor):
        if self.variant == "full":
            q_g = ((mu_g @ self.B_txt_inv) * mu_g).sum(-1)  # mu_g^T B_txt^-1 mu_g, [N]
        else:
            q_g = (mu_g * mu_g) @ self.d_txt
        S_g = (mu_g * mu_g).sum(-1) + v_g * self.tr_img  # [N]
        norm = S_g[:, None] * self.S_h[None, :]
        mean = (mu_g @ self.mu_h.T) / norm.sqrt()
        var_dot = (q_g[:, None] * self.v_h[None, :] + v_g[:, None] * self.q_h[None, :]
                   + (v_g[:, None] * self.v_h[None, :]) * self.tr_cross)
        return mean, var_dot / norm


@torch.no_grad()
def logit_moments(
    posterior,
    img_act,
    txt_act,
    variant: Variant = "full",
    residual=None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the logits for every (image, class) pair.

    ``img_act [N, d_img]`` (tensor or array-like such as ``Pool.image_activations``; read
    ``chunk_size`` rows at a time), ``txt_act [C, d_txt]``, ``residual [N, D]`` or None
    (SigLIP's deterministic image residual, added to the image mean). Returns
    ``(mean [N, C], var [N, C])`` on the posterior's device. Peak memory is
    ``O(chunk_size * (C + D + d_img))`` beyond the outputs.
    """
    check_same_length(img_act=img_act, residual=residual)
    check_nonempty(txt_act, "txt_act", "at least one class")
    B_img, B_txt = posterior.image.B_inv, posterior.text.B_inv
    dtype, device = B_img.dtype, B_img.device
    mu_h, v_h = posterior.text.embedding_moments(to_tensor(txt_act, device, dtype))
    text = _TextSide(mu_h, v_h, B_img, B_txt.to(B_img), variant)
    s, b = float(posterior.head.logit_scale), posterior.head.logit_bias
    n, C = len(img_act), len(txt_act)
    mean = torch.empty(n, C, dtype=dtype, device=device)
    var = torch.empty(n, C, dtype=dtype, device=device)
    for sl in row_chunks(n, chunk_size):
        res = None if residual is None else to_tensor(residual[sl], device, dtype)
        mu_g, v_g = posterior.image.embedding_moments(to_tensor(img_act[sl], device, dtype), res)
        m, v = text.moments(mu_g, v_g)
        mean[sl] = s * m + (0.0 if b is None else float(b))
        var[sl] = (s * s) * v
    return mean, var


def probit_probs(
    mean: torch.Tensor, var: torch.Tensor, link: Link = "softmax", normalize: bool = True
) -> torch.Tensor:
    """Probit-approximate predictive ``[N, C]``: ``link(m / sqrt(1 + pi/8 v))``."""
    return link_probs(mean / torch.sqrt(1.0 + (math.pi / 8.0) * var), link, normalize)


@torch.no_grad()
def mc_logits(
    posterior,
    img_act,
    txt_act,
    k: int,
    generator: torch.Generator | None = None,
    residual=None,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Logits ``[k, N, C]`` under ``k`` joint posterior draws (one draw shared by all inputs).

    The draws come from ``posterior.sample(k, generator)`` once, before the chunk loop.
    """
    check_same_length(img_act=img_act, residual=residual)
    check_nonempty(txt_act, "txt_act", "at least one class")
    W = posterior.image.W_map
    draws = JointDraws.from_posterior(posterior, txt_act, k, generator, device=W.device,
                                      dtype=W.dtype)
    n = len(img_act)
    out = torch.empty(k, n, len(txt_act), dtype=draws.dtype, device=draws.device)
    for sl in row_chunks(n, chunk_size):
        out[:, sl] = draws.logits(img_act[sl], None if residual is None else residual[sl])
    return out


def mc_probs(
    posterior,
    img_act,
    txt_act,
    k: int,
    generator: torch.Generator | None = None,
    residual=None,
    link: Link | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Per-draw class probabilities ``[k, N, C]`` from ``k`` joint posterior draws.

    ``link`` defaults to ``link_for(posterior.head)``; sigmoid probabilities are normalised
    over classes per draw. Average over dim 0 for the Monte Carlo predictive.
    """
    link = link or link_for(posterior.head)
    logits = mc_logits(posterior, img_act, txt_act, k, generator, residual, chunk_size)
    return link_probs(logits, link)
