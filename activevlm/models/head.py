"""The linear projection head shared by every CLIP-style model: the part activevlm models.

Orientation (documented once, used everywhere): a projection is a matrix ``W`` of shape
``[D, d_in]`` acting on column activations, ``g = W a (+ b) (+ r)``, i.e. the layout of
``torch.nn.Linear.weight``. open_clip stores CLIP's ``visual.proj`` as ``[d_in, D]``
(``x @ proj``); the wrapper transposes it on the way in.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from activevlm.models.links import Link, link_for, link_probs
from activevlm.utils.errors import ActiveVLMError
from activevlm.utils.io import atomic_path, dumps_strict, read_json


class ModelFileError(ActiveVLMError, ValueError):
    """A head, checkpoint or model file that is missing, corrupt or does not fit the model."""


def read_safetensors(path: Path, error: type[ActiveVLMError]) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a corrupt file raises ``error`` naming it."""
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError
        raise error(f"{path} is not a readable safetensors file (damaged, truncated or "
                    "another format)") from e


def stack_bias(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[D, d_in]`` (+ bias ``[D]``) -> ``[D, d_in(+1)]``, the bias as the last column (the
    layout of posterior means and weight draws); ``weight``'s dtype is kept."""
    return weight if bias is None else torch.cat([weight, bias[:, None].to(weight)], dim=1)


def augment(act: torch.Tensor, has_bias: bool) -> torch.Tensor:
    """``[N, d_in] -> [N, d_in + 1]`` with a constant-1 column when ``has_bias``, else unchanged;
    ``stack_bias(W, b) @ augment(a, True).T == (W a + b)ᵀ``."""
    if not has_bias:
        return act
    return torch.cat([act, act.new_ones(act.shape[0], 1)], dim=1)


def head_fingerprint(head: ProjectionHead) -> str:
    """Short hash of the image projection (weight and bias): image embeddings, and any index
    over them, are valid only for the same fingerprint."""
    h = hashlib.sha256(head.image_weight.detach().cpu().numpy().tobytes())
    if head.image_bias is not None:
        h.update(head.image_bias.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class ProjectionHead:
    """Image and text projections plus the logit scale (and SigLIP's bias).

    Shapes: ``image_weight [D, d_img]``, ``text_weight [D, d_txt]``, biases ``[D]`` or None.
    ``logit_scale`` is the multiplier ``s = exp(log_scale)``, not its log.
    """

    image_weight: torch.Tensor
    text_weight: torch.Tensor
    logit_scale: float
    image_bias: torch.Tensor | None = None
    text_bias: torch.Tensor | None = None
    logit_bias: float | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        D = self.image_weight.shape[0]
        if self.text_weight.shape[0] != D:
            raise ValueError(
                f"image_weight has {D} output dims but text_weight has {self.text_weight.shape[0]}"
            )
        for name in ("image_bias", "text_bias"):
            b = getattr(self, name)
            if b is not None and b.shape != (D,):
                raise ValueError(f"{name} must have shape [{D}], got {list(b.shape)}")

    @property
    def embed_dim(self) -> int:
        return self.image_weight.shape[0]

    @property
    def image_dim(self) -> int:
        return self.image_weight.shape[1]

    @property
    def text_dim(self) -> int:
        return self.text_weight.shape[1]

    def image_embeddings(
        self, act: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unnormalised image embeddings ``[N, D]`` from activations ``[N, d_img]``."""
        g = act @ self.image_weight.T.to(act)
        if self.image_bias is not None:
            g = g + self.image_bias.to(act)
        if residual is not None:
            g = g + residual.to(act)
        return g

    def text_embeddings(self, act: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings ``[C, D]`` from activations ``[C, d_txt]``."""
        h = act @ self.text_weight.T.to(act)
        if self.text_bias is not None:
            h = h + self.text_bias.to(act)
        return h

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``s * cos(g, h) (+ b)`` for all pairs: ``[N, D] x [C, D] -> [N, C]``."""
        out = self.logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
        if self.logit_bias is not None:
            out = out + self.logit_bias
        return out

    @property
    def link(self) -> Link:
        """How logits become probabilities: ``"sigmoid"`` with a logit bias (SigLIP), else
        ``"softmax"`` (see :mod:`activevlm.models.links`)."""
        return link_for(self)

    def probs(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C]`` of :meth:`logits` through the head's link (SigLIP:
        sigmoids normalised over the classes), the predictive every path scores."""
        return link_probs(self.logits(image_emb, text_emb), self.link)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A copy with all tensors moved/cast."""

        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return ProjectionHead(
            mv(self.image_weight), mv(self.text_weight), self.logit_scale,
            mv(self.image_bias), mv(self.text_bias), self.logit_bias, dict(self.metadata),
        )

    def save(self, path: str | Path) -> None:
        """Write ``<path>.safetensors`` (tensors) and ``<path>.json`` (scalars, metadata)."""
        with self.saving(path):
            pass

    @contextlib.contextmanager
    def saving(self, path: str | Path) -> Iterator[None]:
        """:meth:`save` in two steps: both files are written to temporaries first, the
        ``with`` block runs (other writes that must succeed with it), and only then are
        both renamed into place; a failure anywhere leaves the old files."""
        path = Path(path)
        tensors = {"image_weight": self.image_weight, "text_weight": self.text_weight}
        if self.image_bias is not None:
            tensors["image_bias"] = self.image_bias
        if self.text_bias is not None:
            tensors["text_bias"] = self.text_bias
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"logit_scale": self.logit_scale, "logit_bias": self.logit_bias,
                "metadata": self.metadata}
        with atomic_path(path.with_suffix(".json")) as js, \
                atomic_path(path.with_suffix(".safetensors")) as st:
            save_file(tensors, str(st))
            js.write_text(dumps_strict(meta, indent=2, default=str) + "\n")
            yield

    @classmethod
    def load(cls, path: str | Path) -> ProjectionHead:
        path = Path(path)
        st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
        for p in (st, js):
            if not p.exists():
                raise FileNotFoundError(f"projection head file missing: {p}")
        t = read_safetensors(st, ModelFileError)
        try:
            meta = read_json(js)
        except ValueError as e:
            raise ModelFileError(str(e)) from e
        missing = sorted({"image_weight", "text_weight"} - t.keys())
        if missing:
            raise ModelFileError(f"{st} lacks the tensor(s) {missing}")
        if not isinstance(meta, dict) or not isinstance(meta.get("logit_scale"), int | float):
            raise ModelFileError(f"{js}: field 'logit_scale' must be a number, got "
                                 f"{meta.get('logit_scale') if isinstance(meta, dict) else meta!r}")
        try:
            return cls(
                t["image_weight"], t["text_weight"], float(meta["logit_scale"]),
                t.get("image_bias"), t.get("text_bias"), meta.get("logit_bias"),
                meta.get("metadata", {}),
            )
        except ValueError as e:
            raise ModelFileError(f"{st}: {e}") from e
