"""The ViLU network (Lafon et al., ICCV 2025; MATH.md section 4).

For an image embedding ``z_v`` and candidate text embeddings ``Z_t [K, D]`` (class prompts, or
the captions of a batch), with an optional candidate mask ``[N, K]``:

- ``z_t̂`` is the candidate the zero-shot model predicts, ``argmax_k cos(z_v, Z_t[k])``;
- ``z_α = softmax(s · (W_q z_v)ᵀ (W_k Z_t)ᵀ) (W_v Z_t)``, split over ``num_heads`` heads;
- an MLP on ``[z_v, z_α, z_t̂]`` outputs a logit of P(correct).

All embeddings are L2-normalised inside. With identity-initialised, tied ``W_k = W_v`` kept
frozen (and ``W_q = I``), ``z_α`` is the CLIP-probability-weighted mean of the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn as nn
import torch.nn.functional as F

from activevlm.utils.constraints import Interval, check_constraints
from activevlm.utils.validation import check_shape


class AttentionInit(StrEnum):
    IDENTITY = "identity"
    RANDOM = "random"


class Setting(StrEnum):
    CLASSES = "classes"
    CAPTIONS = "captions"


class FailureWeight(StrEnum):
    DATASET = "dataset"
    BATCH = "batch"


class Optimizer(StrEnum):
    ADAMW = "adamw"
    SGD = "sgd"


@dataclass
class ViLUConfig:
    """Architecture and training options of a ViLU failure predictor.

    ``setting``: ``"classes"`` (candidates = the class prompt embeddings, target = zero-shot
    correctness) or ``"captions"`` (candidates = the captions of each mini-batch, target =
    whether the image retrieves its own caption among them; depends on ``batch_size``).
    ``failure_weight``: ``"dataset"`` (``w = log(1 + #correct/#wrong)`` over the training
    split), ``"batch"`` (the same per mini-batch, as the published code) or a number.
    ``attention_scale``: temperature ``s`` of the cross-attention; None uses the CLIP logit
    scale the model is built with.
    """

    hidden: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.0
    num_heads: int = 1
    attention_init: AttentionInit = AttentionInit.IDENTITY
    tie_kv: bool = True
    freeze_attention_steps: int = 0
    keep_attention_frozen: bool = False
    attention_scale: float | None = None
    setting: Setting = Setting.CLASSES
    failure_weight: FailureWeight | float = FailureWeight.DATASET
    optimizer: Optimizer = Optimizer.ADAMW
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    epochs: int = 100
    batch_size: int = 256
    val_fraction: float = 0.2
    patience: int = 10
    seed: int = 0

    _constraints = {
        "hidden": [tuple, list],
        "dropout": [Interval(0, 1, open_high=True)],
        "num_heads": [Interval(1, None, integer=True)],
        "attention_init": [AttentionInit],
        "tie_kv": [bool],
        "freeze_attention_steps": [Interval(0, None, integer=True)],
        "keep_attention_frozen": [bool],
        "attention_scale": [None, Interval(0, None, open_low=True)],
        "setting": [Setting],
        "failure_weight": [FailureWeight, Interval(0, None, open_low=True)],
        "optimizer": [Optimizer],
        "lr": [Interval(0, None, open_low=True)],
        "weight_decay": [Interval(0, None)],
        "momentum": [Interval(0, 1)],
        "epochs": [Interval(1, None, integer=True)],
        "batch_size": [Interval(1, None, integer=True)],
        "val_fraction": [Interval(0, 1, open_low=True, open_high=True)],
        "patience": [Interval(1, None, integer=True)],
        "seed": [Interval(0, None, integer=True)],
    }

    def __post_init__(self) -> None:
        check_constraints(self)
        self.hidden = tuple(int(h) for h in self.hidden)


def masked_argmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``argmax`` over the last axis of ``scores [N, K]`` among valid entries of ``mask``."""
    if mask is None:
        return scores.argmax(dim=-1)
    return scores.masked_fill(~mask, float("-inf")).argmax(dim=-1)


def check_mask(mask: torch.Tensor | None, n: int, k: int) -> torch.Tensor | None:
    """Validate a candidate mask ``[N, K]`` (True = real candidate); returns it as bool."""
    if mask is None:
        return None
    check_shape(mask, "candidate mask", (n, k))
    mask = mask.bool()
    if not mask.any(dim=1).all():
        bad = int((~mask.any(dim=1)).nonzero()[0])
        raise ValueError(f"candidate mask row {bad} has no valid candidate")
    return mask


class ViLU(nn.Module):
    """Failure predictor head: ``(z_v [N, D], Z_t [K, D], mask [N, K] | None) -> logit [N]``.

    The logit is that of P(correct); the failure probability is ``sigmoid(-logit)``.
    """

    def __init__(self, embed_dim: int, config: ViLUConfig, logit_scale: float = 100.0) -> None:
        super().__init__()
        if embed_dim % config.num_heads:
            raise ValueError(
                f"embed_dim {embed_dim} is not divisible by num_heads {config.num_heads}"
            )
        self.embed_dim = embed_dim
        self.config = config
        scale = config.attention_scale if config.attention_scale is not None else logit_scale
        self.register_buffer("attention_scale", torch.tensor(float(scale)))
        self.w_q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.w_k = nn.Linear(embed_dim, embed_dim, bias=False)
        self.w_v = self.w_k if config.tie_kv else nn.Linear(embed_dim, embed_dim, bias=False)
        if config.attention_init == "identity":
            with torch.no_grad():
                for lin in self.attention_projections():
                    lin.weight.copy_(torch.eye(embed_dim))
        layers: list[nn.Module] = []
        width = 3 * embed_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.set_attention_frozen(config.keep_attention_frozen)

    def attention_projections(self) -> list[nn.Linear]:
        """The distinct projection layers (``W_k`` and ``W_v`` count once when tied)."""
        out = [self.w_q, self.w_k]
        if self.w_v is not self.w_k:
            out.append(self.w_v)
        return out

    def set_attention_frozen(self, frozen: bool) -> None:
        for lin in self.attention_projections():
            lin.weight.requires_grad_(not frozen)

    def attend(self, z_v: torch.Tensor, z_t: torch.Tensor, mask: torch.Tensor | None):
        """Cross-attention of normalised ``z_v [N, D]`` over ``z_t [K, D]`` -> ``[N, D]``."""
        h, n, k = self.config.num_heads, z_v.shape[0], z_t.shape[0]
        d = self.embed_dim // h
        q = self.w_q(z_v).view(n, h, d).transpose(0, 1)  # [h, N, d]
        key = self.w_k(z_t).view(k, h, d).transpose(0, 1)  # [h, K, d]
        val = self.w_v(z_t).view(k, h, d).transpose(0, 1)  # [h, K, d]
        scores = self.attention_scale * q @ key.transpose(1, 2)  # [h, N, K]
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(0), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ val  # [h, N, d]
        return out.transpose(0, 1).reshape(n, self.embed_dim)

    def forward(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``image_emb [N, D]``, ``text_emb [K, D]`` (unnormalised is fine), ``mask [N, K]``
        -> logit of P(correct) ``[N]``."""
        why = f" (this ViLU's embedding dim is {self.embed_dim})"
        check_shape(image_emb, "image_emb", ("N", self.embed_dim), why)
        check_shape(text_emb, "text_emb", ("K", self.embed_dim), why)
        mask = check_mask(mask, image_emb.shape[0], text_emb.shape[0])
        z_v = F.normalize(image_emb, dim=-1)
        z_t = F.normalize(text_emb, dim=-1)
        predicted = masked_argmax(z_v @ z_t.T, mask)
        z_alpha = self.attend(z_v, z_t, mask)
        return self.mlp(torch.cat([z_v, z_alpha, z_t[predicted]], dim=-1)).squeeze(-1)
