"""K joint posterior draws of the projection head, evaluated on any chunk of activations.

Draw k is one pair ``(W_img^k, W_txt^k)``; every input, pool or target, is scored under the
same K pairs, which is what BALD and EPIG need. Logits are linear in each projection, so the
class side is done once: the per-draw normalised text embeddings ``ĥ_k [K, C, D]`` are
precomputed, and an image chunk costs one batched matmul ``[K, D, d] @ [d, n]`` plus
``[K, C, D] @ [K, D, n]``. Memory per chunk is ``K·n·(D + C)`` floats, whatever the pool size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from activevlm.models.head import ProjectionHead, augment, stack_bias
from activevlm.models.links import link_for, link_probs
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import to_tensor
from activevlm.utils.validation import check_shape


def draw_class_embeddings(text_weights: torch.Tensor, text_act, head: ProjectionHead,
                          device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Unit-norm class embeddings ``[K, C, D]`` of class text activations ``text_act [C, d_txt]``
    under text weight draws ``[K, D, d_txt(+1)]`` (bias as last column when ``head`` has one)."""
    t = to_tensor(text_act, device, dtype)
    check_shape(t, "text_act", ("C", head.text_dim))
    t = augment(t, head.text_bias is not None)
    w_txt = text_weights.to(device=device, dtype=dtype)
    return F.normalize(torch.matmul(w_txt, t.T).transpose(1, 2), dim=-1)


class ClassDraws:
    """What joint and per-input draws share: ``text_embeddings [K, C, D]`` and a ``probs(act,
    residual) -> [K, n, C]`` method."""

    text_embeddings: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.text_embeddings.shape[1]

    def probs_chunked(self, act, residual=None, *, chunk_size: int = 1024) -> torch.Tensor:
        """:meth:`probs` over all rows of ``act [M, d_img]`` in chunks: ``[K, M, C]`` (for
        target sets; pools go through :func:`activevlm.acquisition.score_pool`)."""
        m = act.shape[0]
        parts = [
            self.probs(act[i : i + chunk_size],
                       None if residual is None else residual[i : i + chunk_size])
            for i in range(0, m, chunk_size)
        ]
        return torch.cat(parts, dim=1)


@dataclass
class JointDraws(ClassDraws):
    """Joint draws ready for scoring.

    ``image_weight [K, D, d_img(+1)]`` (last column = image bias when ``image_bias_column``),
    ``text_embeddings [K, C, D]`` unit-norm class embeddings under the same draws,
    ``logit_scale`` s (multiplier) and optional SigLIP ``logit_bias``.
    """

    image_weight: torch.Tensor
    text_embeddings: torch.Tensor
    logit_scale: float
    logit_bias: float | None = None
    image_bias_column: bool = False
    #: draw k is the same model for every input (what EPIG and conditioning need); see
    #: :class:`activevlm.bayes.marginal_draws.MarginalDraws` for draws exact per input only
    joint_across_inputs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        k, d, _ = self.image_weight.shape
        if self.text_embeddings.shape[0] != k or self.text_embeddings.shape[2] != d:
            raise ValueError(
                f"text_embeddings {list(self.text_embeddings.shape)} do not match "
                f"image_weight {list(self.image_weight.shape)} (need [K, C, D])"
            )

    @property
    def num_draws(self) -> int:
        return self.image_weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.image_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.image_weight.dtype

    @classmethod
    def from_weights(
        cls,
        image_weights: torch.Tensor,
        text_weights: torch.Tensor,
        text_act,
        head: ProjectionHead,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> JointDraws:
        """Build from weight draws ``[K, D, d_img(+1)]``, ``[K, D, d_txt(+1)]`` (draw k of both
        is one joint sample) and class text activations ``[C, d_txt]``.

        A bias column is expected exactly when ``head`` has that bias (SigLIP), as in
        ``ModalityPosterior.sample``; ``head`` supplies ``logit_scale`` and ``logit_bias``.
        """
        dev = resolve_device(device)
        img_bias = head.image_bias is not None
        txt_bias = head.text_bias is not None
        for name, w, d_in, bias in (
            ("image_weights", image_weights, head.image_dim, img_bias),
            ("text_weights", text_weights, head.text_dim, txt_bias),
        ):
            check_shape(w, name, ("K", head.embed_dim, d_in + int(bias)),
                        " (bias as last column)" if bias else "")
        if image_weights.shape[0] != text_weights.shape[0]:
            raise ValueError(
                f"image_weights has {image_weights.shape[0]} draws, text_weights "
                f"{text_weights.shape[0]}: joint draws come in pairs"
            )
        h = draw_class_embeddings(text_weights, text_act, head, dev, dtype)
        return cls(
            image_weights.to(device=dev, dtype=dtype), h, float(head.logit_scale),
            head.logit_bias, img_bias,
        )

    @classmethod
    def from_head(
        cls,
        head: ProjectionHead,
        text_act,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> JointDraws:
        """The deterministic (MAP) head as a single draw, K = 1."""
        img = stack_bias(head.image_weight, head.image_bias)[None]
        txt = stack_bias(head.text_weight, head.text_bias)[None]
        return cls.from_weights(img, txt, text_act, head, device=device, dtype=dtype)

    @classmethod
    def from_posterior(
        cls,
        posterior,
        text_act,
        k: int,
        generator: torch.Generator,
        *,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> JointDraws:
        """K joint draws from a ``BayesVLMPosterior``: ``posterior.sample(k, generator)`` gives
        ``.image [k, D, d_img(+1)]`` and ``.text [k, D, d_txt(+1)]``, draw i of both = one model."""
        draws = posterior.sample(k, generator)
        return cls.from_weights(draws.image, draws.text, text_act, posterior.head,
                                device=device, dtype=dtype)

    def logits(self, act, residual=None) -> torch.Tensor:
        """``s·cos(g_k, h_k,c) (+ b)`` for a chunk: act ``[n, d_img]`` (+ residual ``[n, D]``)
        -> ``[K, n, C]``."""
        a = to_tensor(act, self.device, self.dtype)
        d_img = self.image_weight.shape[2] - int(self.image_bias_column)
        check_shape(a, "activations", ("n", d_img))
        a = augment(a, self.image_bias_column)
        g = torch.matmul(self.image_weight, a.T).transpose(1, 2)  # [K, n, D], one matmul
        if residual is not None:
            g = g + to_tensor(residual, self.device, self.dtype)
        return self.logits_from_embeddings(g)

    def logits_from_embeddings(self, g: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, n, C]`` of per-draw unnormalised image embeddings ``g [K, n, D]``
        (e.g. embeddings updated by label-free conditioning) against the draws' classes."""
        if g.ndim != 3 or g.shape[0] != self.num_draws or g.shape[2] != self.image_weight.shape[1]:
            raise ValueError(f"embeddings must be [K={self.num_draws}, n, "
                             f"D={self.image_weight.shape[1]}], got {list(g.shape)}")
        out = self.logit_scale * torch.matmul(F.normalize(g, dim=2),
                                              self.text_embeddings.transpose(1, 2))
        if self.logit_bias is not None:
            out = out + self.logit_bias
        return out

    def probs_from_embeddings(self, g: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[K, n, C]`` of embeddings ``g [K, n, D]`` (see :meth:`probs`)."""
        return link_probs(self.logits_from_embeddings(g), link_for(self))

    def probs(self, act, residual=None) -> torch.Tensor:
        """Class probabilities per draw ``[K, n, C]``: softmax, or normalised sigmoids for
        SigLIP heads (``links.link_for``), the predictive that evaluation uses too."""
        return link_probs(self.logits(act, residual), link_for(self))
