"""A small random BayesVLM posterior (random head, random SPD factors) for acquisition tests."""

from __future__ import annotations

import torch

from activevlm.bayes.posterior import BayesVLMPosterior, ModalityPosterior, map_weight
from activevlm.models.head import ProjectionHead


def toy_posterior(
    D: int = 3, d_img: int = 4, d_txt: int = 3, C: int = 3, *, pseudo_count: float = 1.0,
    prior_precision: float = 1.0, text_prior_precision: float | None = None,
    image_rank: int | None = None, scale: float = 10.0, siglip: bool = False, seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[BayesVLMPosterior, torch.Tensor]:
    """``(posterior, text_act [C, d_txt])``; ``siglip`` adds an image bias and a logit bias;
    ``text_prior_precision`` (default: ``prior_precision``) sets how uncertain the text side is;
    ``image_rank < d_img``: the image activations seen so far span only that many directions,
    inputs outside them are far from the data (``v = ãᵀÃ⁻¹ã`` large)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    def spd(k, rank=None):
        m = randn(k, rank or 2 * k)
        return m @ m.T / m.shape[1]

    head = ProjectionHead(randn(D, d_img), randn(D, d_txt), scale,
                          randn(D) if siglip else None, None, -2.0 if siglip else None)
    img = ModalityPosterior(map_weight(head.image_weight, head.image_bias).to(dtype),
                            spd(d_img + int(siglip), image_rank), spd(D), prior_precision,
                            pseudo_count, siglip)
    txt = ModalityPosterior(map_weight(head.text_weight, None).to(dtype), spd(d_txt), spd(D),
                            prior_precision if text_prior_precision is None
                            else text_prior_precision, pseudo_count)
    return BayesVLMPosterior(img, txt, head), randn(C, d_txt)
