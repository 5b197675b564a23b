"""From logits to class probabilities: softmax (CLIP) or normalised sigmoids (SigLIP).

SigLIP's per-class sigmoids do not sum to one; zero-shot classification normalises them,
``p_c = sigmoid(l_c) / sum_j sigmoid(l_j)``. Evaluation, Monte Carlo predictives and
acquisition scores all use these two functions (a head's own predictive:
``ProjectionHead.probs``), so they score the same predictive.
"""

from __future__ import annotations

from typing import Literal

import torch

Link = Literal["softmax", "sigmoid"]


def link_for(head) -> Link:
    """``"sigmoid"`` for heads with a logit bias (SigLIP), else ``"softmax"`` (CLIP); the
    same as ``ProjectionHead.link``."""
    return "sigmoid" if getattr(head, "logit_bias", None) is not None else "softmax"


def link_probs(logits: torch.Tensor, link: Link = "softmax", normalize: bool = True):
    """Class probabilities ``[..., C]`` from logits ``[..., C]`` (see the module docstring)."""
    if link == "softmax":
        return torch.softmax(logits, dim=-1)
    if link == "sigmoid":
        q = torch.sigmoid(logits)
        return q / q.sum(-1, keepdim=True) if normalize else q
    raise ValueError(f"link must be 'softmax' or 'sigmoid', got {link!r}")
