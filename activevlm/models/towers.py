"""Split each open_clip tower into "everything before the last linear layer" and that layer.

Supported towers (anything else raises :class:`UnsupportedModelError` naming these):

- image, CLIP ViT: open_clip ``VisionTransformer`` whose output is ``pooled @ proj``
  (pooled token after ``ln_post``); ``W = proj.T``, no bias, no residual.
- image, SigLIP/SigLIP2: open_clip ``TimmModel`` around a timm ``VisionTransformer`` with a
  MAP head (``timm_pool="map"``, ``timm_proj="none"``). The head computes
  ``x = attn(...)``, ``out = x + fc2(act(fc1(norm(x))))`` and pools over its latent(s); the
  projection is ``fc2`` (with bias), the activation is its input and the residual ``r`` is
  the pooled ``x``. Nothing follows in timm (``fc_norm``/``head`` are identities, checked).
- image, timm backbone with a linear projection (``timm_proj="linear"``, global pooling by
  timm, e.g. a ResNet/ConvNeXt trunk): ``W`` is ``head.proj`` (bias optional), the activation
  is its input (the pooled trunk features), no residual.
- text: open_clip ``TextTransformer`` (``CLIP`` keeps its parts on the model itself,
  ``CustomTextCLIP`` in ``model.text``) with a linear ``text_projection``: an
  ``nn.Parameter [d, D]`` (``x @ P``) or an ``nn.Linear`` (SigLIP, with bias); the activation
  is the pooled token after ``ln_final``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.timm_model import TimmModel
from open_clip.transformer import TextTransformer, VisionTransformer
from torch import nn

SUPPORTED = (
    "image tower: open_clip VisionTransformer with a linear `proj` (CLIP ViT-B-32, ViT-B-16, "
    "ViT-L-14, ViT-H-14, ...), a timm VisionTransformer with a MAP attention-pool head and "
    "timm_proj='none' (SigLIP, SigLIP2), or a timm backbone with timm_proj='linear' and timm's "
    "own global pooling; text tower: open_clip TextTransformer with a linear "
    "text_projection (nn.Parameter or nn.Linear), in a CLIP or CustomTextCLIP model"
)


class UnsupportedModelError(ValueError):
    """The open_clip model's architecture has no exact activation/projection split here."""

    def __init__(self, what: str):
        super().__init__(f"unsupported architecture: {what}. Supported: {SUPPORTED}")


@contextlib.contextmanager
def _without(module: nn.Module, attr: str) -> Iterator[None]:
    """Temporarily set ``module.<attr>`` (a projection) to None so the tower returns its input."""
    saved = getattr(module, attr)
    setattr(module, attr, None)
    try:
        yield
    finally:
        setattr(module, attr, saved)


class ImageTower(Protocol):
    """Image side: ``weight [D, d_img]``, ``bias [D] | None`` and
    ``activations(pixels [B,3,H,W]) -> (a [B, d_img], residual [B, D] | None)``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    has_residual: bool

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class ViTImageTower:
    def __init__(self, visual: VisionTransformer):
        if getattr(visual, "attn_pool", None) is not None:
            raise UnsupportedModelError("VisionTransformer with an attentional pooler (CoCa-style)")
        if visual.output_tokens:
            raise UnsupportedModelError("VisionTransformer with output_tokens=True")
        if not isinstance(visual.proj, nn.Parameter) or visual.proj.ndim != 2:
            raise UnsupportedModelError("VisionTransformer without a linear `proj`")
        self.visual = visual
        self.weight = visual.proj.detach().T
        self.bias = None
        self.has_residual = False

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        with _without(self.visual, "proj"):
            return self.visual(pixels), None


class TimmMapImageTower:
    def __init__(self, visual: TimmModel):
        trunk = visual.trunk
        pool = getattr(trunk, "attn_pool", None)
        mlp = getattr(pool, "mlp", None)
        fc2 = getattr(mlp, "fc2", None)
        if not isinstance(fc2, nn.Linear) or not isinstance(getattr(pool, "norm", None), nn.Module):
            raise UnsupportedModelError(
                f"timm tower {type(trunk).__name__} without a MAP head ending in mlp.fc2"
            )
        if pool.pool not in ("token", "avg"):
            raise UnsupportedModelError(f"MAP head pooling {pool.pool!r}")
        for name, mod in (("trunk.fc_norm", getattr(trunk, "fc_norm", None)),
                          ("trunk.head", getattr(trunk, "head", None))):
            if not isinstance(mod, nn.Identity):
                raise UnsupportedModelError(f"timm MAP tower with a non-identity {name}")
        if len(visual.head) != 0:
            raise UnsupportedModelError("timm tower with an extra open_clip projection (timm_proj)")
        self.visual, self.attn_pool, self.fc2 = visual, pool, fc2
        self.weight = fc2.weight.detach()
        self.bias = None if fc2.bias is None else fc2.bias.detach()
        self.has_residual = True
        self.verified = False

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pool over the head's latent queries exactly as timm does: ``[B, L, C] -> [B, C]``."""
        return x[:, 0] if self.attn_pool.pool == "token" else x.mean(dim=1)

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        hooks = [
            self.fc2.register_forward_pre_hook(lambda m, inp: seen.__setitem__("a", inp[0])),
            self.attn_pool.norm.register_forward_pre_hook(
                lambda m, inp: seen.__setitem__("r", inp[0])),
        ]
        try:
            out = self.visual(pixels)
        finally:
            for h in hooks:
                h.remove()
        if set(seen) != {"a", "r"}:
            raise RuntimeError("timm MAP head did not run its norm/fc2 layers; cannot split it")
        a, r = self._pool(seen["a"]), self._pool(seen["r"])
        if not self.verified:
            self._verify(a, r, out)
        return a, r

    def _verify(self, a: torch.Tensor, r: torch.Tensor, out: torch.Tensor) -> None:
        """Once per model: ``fc2(a) + r`` must equal the tower's output, else the split is wrong
        (e.g. a timm version that adds a layer after the head)."""
        g = a.float() @ self.weight.float().T + r.float()
        if self.bias is not None:
            g = g + self.bias.float()
        tol = 1e-3 if out.dtype == torch.float32 else 3e-2
        err = ((g - out.float()).norm() / out.float().norm().clamp_min(1e-12)).item()
        if err > tol:
            raise UnsupportedModelError(
                f"timm MAP tower whose output is not fc2(a) + residual (relative error {err:.2e})"
            )
        self.verified = True


class TimmLinearImageTower:
    """timm trunk (pooled by timm) followed by open_clip's ``head = [drop, proj]``."""

    def __init__(self, visual: TimmModel):
        names = [n for n, _ in visual.head.named_children()]
        proj = getattr(visual.head, "proj", None)
        if names != ["drop", "proj"] or not isinstance(proj, nn.Linear):
            raise UnsupportedModelError(f"timm tower with head layers {names} (need drop, proj)")
        self.visual, self.proj = visual, proj
        self.weight = proj.weight.detach()
        self.bias = None if proj.bias is None else proj.bias.detach()
        self.has_residual = False

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        seen: dict[str, torch.Tensor] = {}
        hook = self.proj.register_forward_pre_hook(lambda m, inp: seen.__setitem__("a", inp[0]))
        try:
            self.visual(pixels)
        finally:
            hook.remove()
        if seen["a"].ndim != 2:
            raise UnsupportedModelError("timm tower whose projection input is not pooled [B, C]")
        return seen["a"], None


class TextTower:
    """Text side: ``weight [D, d_txt]``, ``bias [D] | None``; ``activations(tokens)``."""

    def __init__(self, model: nn.Module):
        if isinstance(model, CLIP):
            owner, encode = model, model.encode_text
        elif isinstance(model, CustomTextCLIP) and isinstance(model.text, TextTransformer):
            owner, encode = model.text, model.text
            if owner.cls_emb is not None or owner.output_tokens:
                raise UnsupportedModelError("TextTransformer with a CLS embedding / token output")
        else:
            text = getattr(model, "text", None)
            raise UnsupportedModelError(
                f"{type(model).__name__} with text tower {type(text).__name__}"
            )
        proj = owner.text_projection
        if isinstance(proj, nn.Linear):
            self.weight = proj.weight.detach()
            self.bias = None if proj.bias is None else proj.bias.detach()
        elif isinstance(proj, nn.Parameter) and proj.ndim == 2:
            self.weight, self.bias = proj.detach().T, None
        else:
            raise UnsupportedModelError("text tower without a linear text_projection")
        self.owner, self.encode = owner, encode

    def activations(self, tokens: torch.Tensor) -> torch.Tensor:
        with _without(self.owner, "text_projection"):
            return self.encode(tokens)


def image_tower(model: nn.Module) -> ImageTower:
    """The image tower adapter for an open_clip model, or :class:`UnsupportedModelError`."""
    if type(model) not in (CLIP, CustomTextCLIP):
        raise UnsupportedModelError(f"model class {type(model).__name__}")
    visual = model.visual
    if isinstance(visual, VisionTransformer):
        return ViTImageTower(visual)
    if isinstance(visual, TimmModel):
        if len(visual.head) == 0:
            return TimmMapImageTower(visual)
        return TimmLinearImageTower(visual)
    raise UnsupportedModelError(f"image tower {type(visual).__name__}")
