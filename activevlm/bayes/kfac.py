"""KFAC factors of the analytic GGN of a contrastive loss w.r.t. a projection (MATH.md §1).

For a query with unnormalised embedding ``g`` (``ĝ = g/ρ``, ``ρ = ‖g‖``,
``J = (I − ĝĝᵀ)/ρ``) and normalised candidate embeddings ``Y [C, D]`` with logits
``l = s·Yĝ (+ b)``, the per-sample GGN w.r.t. ``g`` is

    InfoNCE:  H = s² J Yᵀ (diag p − p pᵀ) Y J,     p = softmax(l)
    sigmoid:  H = s² J Yᵀ diag(σ(l)(1 − σ(l))) Y J

(independent of the label). The factors are ``A = Σ ã ãᵀ / √N`` and ``B = Σ H_i / √N``.
:func:`ggn_sum` sums ``H_i`` over a chunk of queries with ``[n, C]`` and ``[D, D]`` matrix
products only (``J G J`` expanded), so no ``[n, D, D]`` or ``[n, C, D]`` tensor is formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from activevlm.models.head import ProjectionHead, augment
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import row_chunks, to_tensor
from activevlm.utils.validation import (
    check_choice,
    check_positive_int,
    check_shape,
)

LOSSES = ("infonce", "sigmoid")
MODES = ("pairs", "labels")


class RowArray(Protocol):
    """Anything 2-D that slices rows into an ndarray (np.memmap, a pool's ShardedArray)."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> Any: ...


ActivationSource = torch.Tensor | np.ndarray | RowArray


@dataclass
class KFACFactors:
    """KFAC factors of one projection: ``A [d, d]`` (``d = d_in + 1`` when ``has_bias``),
    ``B [D, D]`` (float64, CPU), from ``num_samples`` GGN terms of ``loss``."""

    A: torch.Tensor
    B: torch.Tensor
    num_samples: int
    loss: str
    has_bias: bool
    description: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready metadata (no tensors)."""
        return {"num_samples": self.num_samples, "loss": self.loss, "has_bias": self.has_bias,
                "A_shape": list(self.A.shape), "B_shape": list(self.B.shape), **self.description}


def ggn_sum(
    g: torch.Tensor,
    Y: torch.Tensor,
    logit_scale: float,
    loss: str = "infonce",
    logit_bias: float | None = None,
) -> torch.Tensor:
    """``Σ_i H_i [D, D]`` over queries ``g [n, D]`` (unnormalised) against normalised
    candidates ``Y [C, D]``; memory ``O(n·C + D²)``."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    rho = g.norm(dim=1, keepdim=True)
    gh = g / rho
    inv = 1.0 / rho.squeeze(1) ** 2                          # [n]
    K = gh @ Y.T                                               # cosines [n, C]
    logits = logit_scale * K
    if loss == "infonce":
        w = torch.softmax(logits, dim=1)
    else:
        sig = torch.sigmoid(logits + (logit_bias or 0.0))
        w = sig * (1 - sig)
    # J G J with G = Yᵀ diag(w) Y:  (G − ĝuᵀ − uĝᵀ + c ĝĝᵀ) / ρ²,  u = Gĝ, c = ĝᵀGĝ
    wK = w * K
    T1 = (Y * (inv @ w)[:, None]).T @ Y
    T2 = ((wK @ Y) * inv[:, None]).T @ gh
    c = (wK * K).sum(dim=1)
    T4 = (gh * (c * inv)[:, None]).T @ gh
    S = T1 - T2 - T2.T + T4
    if loss == "infonce":                                      # − Σ (J Yᵀp)(J Yᵀp)ᵀ
        M = w @ Y
        Q = (M - gh * (gh * M).sum(dim=1, keepdim=True)) * inv.sqrt()[:, None]
        S = S - Q.T @ Q
    return logit_scale ** 2 * S


class _Accumulator:
    """Float64 running sums of ``Σ ã ãᵀ`` and ``Σ H_i`` for one projection."""

    def __init__(self, d: int, D: int, has_bias: bool, device) -> None:
        self.has_bias = has_bias
        self.A = torch.zeros(d + int(has_bias), d + int(has_bias), dtype=torch.float64,
                             device=device)
        self.B = torch.zeros(D, D, dtype=torch.float64, device=device)
        self.n = 0

    def add_activations(self, a: torch.Tensor) -> None:
        a = augment(a, self.has_bias)
        self.A += (a.T @ a).double()

    def add_ggn(self, g: torch.Tensor, Y: torch.Tensor, head: ProjectionHead, loss: str,
                chunk_elements: int) -> None:
        rows = max(1, chunk_elements // max(Y.shape[0], 1))
        for i in range(0, g.shape[0], rows):
            self.B += ggn_sum(g[i:i + rows], Y, head.logit_scale, loss, head.logit_bias).double()
        self.n += g.shape[0]

    def factors(self, loss: str, description: dict) -> KFACFactors:
        if self.n == 0:
            raise ValueError("no samples: cannot estimate KFAC factors from empty activations")
        r = math.sqrt(self.n)
        A, B = (self.A / r).cpu(), (self.B / r).cpu()
        return KFACFactors(0.5 * (A + A.T), 0.5 * (B + B.T), self.n, loss, self.has_bias,
                           description)


def estimate_kfac(
    head: ProjectionHead,
    image_act: ActivationSource,
    text_act: ActivationSource,
    *,
    mode: str = "pairs",
    loss: str | None = None,
    batch_size: int = 4096,
    image_residual: ActivationSource | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype = torch.float32,
    chunk_elements: int = 1 << 24,
    progress: bool = True,
) -> tuple[KFACFactors, KFACFactors]:
    """KFAC factors ``(image, text)`` of the analytic GGN on cached activations.

    ``mode="pairs"``: ``image_act [N, d_img]`` and caption ``text_act [N, d_txt]`` aligned row
    by row, split into consecutive class batches of ``batch_size`` (shuffle beforehand if the
    order is not random). Image ``i``'s candidates are the batch's normalised text
    embeddings; text ``i``'s candidates are the batch's normalised image embeddings.
    N_img = N_txt = N.

    ``mode="labels"``: ``text_act [C, d_txt]`` are class prompt activations. Each image's
    candidates are the C normalised class embeddings (N_img = N). Text side: for every batch
    of ``batch_size`` images, each class text is one sample whose candidates are that batch's
    normalised image embeddings (N_txt = C × number of batches).

    ``loss``: "infonce" | "sigmoid"; None picks "sigmoid" when the head has a logit bias.
    ``image_residual [N, D]`` (SigLIP) is added to the image embeddings. Work runs on
    ``device`` in ``dtype`` with float64 accumulators; ``chunk_elements`` bounds each
    ``[rows, C]`` logit block.
    """
    check_choice(mode, "mode", MODES)
    loss = check_choice(loss or ("sigmoid" if head.logit_bias is not None else "infonce"),
                        "loss", LOSSES)
    check_positive_int(batch_size, "batch_size")
    dev = resolve_device(device)
    why = " to match the head"
    N = check_shape(image_act, "image_act", ("N", head.image_dim), why)[0]
    N_txt = check_shape(text_act, "text_act", ("N" if mode == "pairs" else "C",
                                               head.text_dim), why)[0]
    if mode == "pairs" and N_txt != N:
        raise ValueError(f"pairs mode needs as many text rows as image rows: "
                         f"image_act has {N}, text_act has {N_txt}")
    if image_residual is not None:
        check_shape(image_residual, "image_residual", (N, head.embed_dim), why)
    h = head.to(dev, dtype)
    D = h.embed_dim
    img = _Accumulator(h.image_dim, D, h.image_bias is not None, dev)
    txt = _Accumulator(h.text_dim, D, h.text_bias is not None, dev)

    if mode == "labels":
        t_all = to_tensor(text_act[:], dev, dtype)
        h_all = h.text_embeddings(t_all)
        Y_txt = F.normalize(h_all, dim=-1)
    n_batches = math.ceil(N / batch_size)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"KFAC ({mode}, {loss})", total=n_batches)
        for rows in row_chunks(N, batch_size):
            a = to_tensor(image_act[rows], dev, dtype)
            r = None if image_residual is None else to_tensor(image_residual[rows], dev, dtype)
            g = h.image_embeddings(a, r)
            if mode == "pairs":
                t = to_tensor(text_act[rows], dev, dtype)
                ht = h.text_embeddings(t)
                Y_txt = F.normalize(ht, dim=-1)
            else:
                t, ht = t_all, h_all
            img.add_activations(a)
            img.add_ggn(g, Y_txt, h, loss, chunk_elements)
            txt.add_activations(t)
            txt.add_ggn(ht, F.normalize(g, dim=-1), h, loss, chunk_elements)
            bar.advance(task)

    desc = {"mode": mode, "batch_size": batch_size, "num_images": N, "num_texts": N_txt}
    return img.factors(loss, desc), txt.factors(loss, desc)
