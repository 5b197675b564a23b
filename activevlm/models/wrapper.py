"""``load_vlm``: an open_clip model split into frozen encoders, activations and a linear head.

Everything downstream works on pre-projection activations (``a`` for images, ``t`` for
texts) and the :class:`~activevlm.models.head.ProjectionHead`; ``head.image_embeddings(a, r)``
and ``head.text_embeddings(t)`` reproduce open_clip's ``encode_image``/``encode_text``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import open_clip
import torch
from rich.progress import track
from torch import nn

from activevlm.data.prompts import build_prompts
from activevlm.models.head import ModelFileError, ProjectionHead
from activevlm.models.registry import (
    config_digest,
    default_checkpoint,
    get_model_config,
    is_schema_name,
)
from activevlm.models.towers import TextTower, image_tower
from activevlm.utils.device import resolve_device
from activevlm.utils.errors import ActiveVLMError

Precision = Literal["auto", "fp32", "amp", "amp_bf16"]
Family = Literal["clip", "siglip"]

_AMP_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16}


class PretrainedUnavailableError(ActiveVLMError, RuntimeError):
    """Pretrained weights for a tag could not be fetched (offline, not cached, no network)."""


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_transform(preprocess: Callable) -> str:
    """One line naming each step of a torchvision ``Compose`` (or the callable's repr)."""
    steps = getattr(preprocess, "transforms", [preprocess])
    return " -> ".join(re.sub(r"\s+", " ", repr(t)).strip() for t in steps)


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", *_AMP_DTYPES):
        raise ValueError(f"precision must be one of auto, fp32, amp, amp_bf16; got {precision!r}")
    if device.type != "cuda":
        if precision in _AMP_DTYPES:
            warnings.warn(f"precision={precision!r} needs CUDA; running fp32 on {device}",
                          stacklevel=3)
        return None
    return _AMP_DTYPES.get("amp" if precision == "auto" else precision)


class VLM:
    """A loaded open_clip model with its activation/projection split.

    Activations and embeddings are returned as float32 CPU tensors; ``head`` is CPU float32.
    Inference runs batched under ``torch.no_grad`` (CUDA autocast when ``precision`` says so).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        *,
        name: str,
        pretrained: str | None,
        checkpoint: Path | None,
        model_id: str,
        device: torch.device,
        amp_dtype: torch.dtype | None,
    ):
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.preprocess_description = _describe_transform(preprocess)
        self.tokenizer = tokenizer
        self.name, self.pretrained, self.checkpoint = name, pretrained, checkpoint
        self.model_id = model_id
        self.device = device
        self.amp_dtype = amp_dtype
        self.precision = {None: "fp32", torch.float16: "amp", torch.bfloat16: "amp_bf16"}[amp_dtype]
        self._image = image_tower(model)
        self._text = TextTower(model)
        logit_bias = getattr(model, "logit_bias", None)
        self.family: Family = "clip" if logit_bias is None else "siglip"

        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().to("cpu", torch.float32).clone()

        self.head = ProjectionHead(
            image_weight=cpu(self._image.weight),
            text_weight=cpu(self._text.weight),
            logit_scale=float(model.logit_scale.detach().exp().item()),
            image_bias=cpu(self._image.bias),
            text_bias=cpu(self._text.bias),
            logit_bias=None if logit_bias is None else float(logit_bias.detach().item()),
            metadata={"model_id": model_id, "family": self.family},
        )

    def __repr__(self) -> str:
        return (f"VLM({self.model_id!r}, family={self.family!r}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, D={self.head.embed_dim}, "
                f"d_img={self.head.image_dim}, d_txt={self.head.text_dim})")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @staticmethod
    def _out(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float().cpu()

    def _image_batches(self, pixels: torch.Tensor, batch_size: int, fn: Callable):
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must have shape [B, 3, H, W], got {list(pixels.shape)}")
        with torch.no_grad(), self._autocast():
            for start in range(0, len(pixels), batch_size):
                yield fn(pixels[start:start + batch_size].to(self.device))

    def image_activations(
        self, pixels: torch.Tensor, batch_size: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pre-projection activations ``[B, d_img]`` and SigLIP's residual ``[B, D]`` (else None).

        ``head.image_embeddings(act, residual)`` equals :meth:`encode_image` (float tolerance).
        """
        acts, residuals = [], []
        for a, r in self._image_batches(pixels, batch_size, self._image.activations):
            acts.append(self._out(a))
            residuals.append(self._out(r))
        act = torch.cat(acts) if acts else torch.empty(0, self.head.image_dim)
        if not self._image.has_residual:
            return act, None
        return act, torch.cat(residuals) if residuals else torch.empty(0, self.head.embed_dim)

    def encode_image(self, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """open_clip's own unnormalised image embeddings ``[B, D]`` (for checks)."""
        out = [self._out(g) for g in
               self._image_batches(pixels, batch_size, self.model.encode_image)]
        return torch.cat(out) if out else torch.empty(0, self.head.embed_dim)

    def _text_batches(self, texts: Sequence[str], batch_size: int, fn: Callable,
                      progress: bool) -> list[torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        starts = range(0, len(texts), batch_size)
        out = []
        with torch.no_grad(), self._autocast():
            for start in track(starts, description="encoding texts", disable=not progress):
                tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
                out.append(self._out(fn(tokens)))
        return out

    def text_activations(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = False
    ) -> torch.Tensor:
        """Pre-projection text activations ``[B, d_txt]`` (pooled token after ``ln_final``)."""
        out = self._text_batches(texts, batch_size, self._text.activations, progress)
        return torch.cat(out) if out else torch.empty(0, self.head.text_dim)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """open_clip's own unnormalised text embeddings ``[B, D]`` (for checks)."""
        out = self._text_batches(texts, batch_size, self.model.encode_text, False)
        return torch.cat(out) if out else torch.empty(0, self.head.embed_dim)

    def prompt_activations(
        self, prompts: Sequence[Sequence[str]], batch_size: int = 256, progress: bool = False
    ) -> torch.Tensor:
        """Prompt-ensemble activations ``[C, d_txt]``: per class, the mean of its prompts'
        activations, taken before any normalisation, so that
        ``head.text_embeddings(mean) == mean(head.text_embeddings(each))`` (linear head)."""
        counts = [len(p) for p in prompts]
        empty = [i for i, n in enumerate(counts) if n == 0]
        if empty:
            raise ValueError(f"classes {empty[:10]} have no prompts")
        flat = [text for group in prompts for text in group]
        act = self.text_activations(flat, batch_size=batch_size, progress=progress)
        return torch.stack([chunk.mean(dim=0) for chunk in act.split(counts)]) if counts else \
            torch.empty(0, self.head.text_dim)

    def class_text_activations(
        self, classnames: Sequence[str], templates, batch_size: int = 256,
        progress: bool = False,
    ) -> torch.Tensor:
        """Class prompt ensembles ``[C, d_txt]``: ``templates`` (format strings with one ``{}``,
        or whatever ``activevlm.data.prompts.build_prompts`` accepts) filled with the cleaned
        class names, averaged per class as in :meth:`prompt_activations`."""
        return self.prompt_activations(build_prompts(list(classnames), templates),
                                       batch_size=batch_size, progress=progress)


def _tokenizer(name: str, cfg: dict) -> Callable:
    """open_clip's tokenizer for ``name``, except that a config naming no HF tokenizer gets
    open_clip's ``SimpleTokenizer`` even when the name contains "siglip" (open_clip would then
    guess a SigLIP sentencepiece tokenizer that needs ``transformers`` and the network)."""
    text_cfg = cfg["text_cfg"]
    if text_cfg.get("hf_tokenizer_name") or "siglip" not in name.lower():
        return open_clip.get_tokenizer(name)
    return open_clip.SimpleTokenizer(
        context_length=text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH),
        **text_cfg.get("tokenizer_kwargs", {}),
    )


def _create_pretrained(name: str, tag: str):
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        hint = " (it is a file: pass checkpoint=PATH)" if Path(tag).is_file() else ""
        raise ValueError(f"unknown pretrained tag {tag!r} for model {name!r}{hint}; "
                         f"known tags: {tags or 'none'}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except RuntimeError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        raise PretrainedUnavailableError(
            f"could not get pretrained weights for {name!r} tag {tag!r} "
            f"(HF_HUB_OFFLINE={offline}; offline only files already in the Hugging Face cache "
            f"can be used, otherwise a network connection is needed)"
        ) from e
    return model, preprocess


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's warnings (it logs on the root logger) for one call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_vlm(
    name: str,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    precision: Precision = "auto",
    seed: int = 0,
) -> VLM:
    """Load an open_clip model as a :class:`VLM`.

    ``name``: an open_clip config name (built-in or added with ``register_model_config``) or
    an ``hf-hub:``/``local-dir:`` name (weights come with it). Weights: ``pretrained`` (an
    open_clip tag, e.g. ``"laion2b_s34b_b79k"``), ``checkpoint`` (a local state-dict file), or
    neither: the name's registered default checkpoint (``register_default_checkpoint``; e.g.
    ``"activevlm-demo"``'s shipped weights), else random initialisation seeded by ``seed``,
    identical on every call.
    ``precision``: ``"auto"`` = fp16 autocast on CUDA, fp32 on CPU.
    ``model_id`` keys caches: ``name@tag``, ``name@sha256:<file hash>``, or
    ``name@random-init:seed=<seed>:cfg=<config hash>``.
    """
    if pretrained is not None and checkpoint is not None:
        raise ValueError("pass either pretrained=TAG or checkpoint=PATH, not both")
    dev = resolve_device(device)
    amp_dtype = _amp_dtype(precision, dev)
    if pretrained is None and checkpoint is None and not is_schema_name(name):
        checkpoint = default_checkpoint(name)
    ckpt = None if checkpoint is None else Path(checkpoint)
    if is_schema_name(name):
        if pretrained is not None or ckpt is not None:
            raise ValueError(f"{name!r} brings its own weights; pretrained/checkpoint must be None")
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        tokenizer, model_id = open_clip.get_tokenizer(name), name
    else:
        cfg = get_model_config(name)
        if pretrained is not None:
            model, preprocess = _create_pretrained(name, pretrained)
            model_id = f"{name}@{pretrained}"
        else:
            if ckpt is not None and not ckpt.is_file():
                raise FileNotFoundError(f"checkpoint file not found: {ckpt}")
            with torch.random.fork_rng(devices=[]), _quiet_open_clip():
                # open_clip warns "no pretrained weights" here: intended, or loaded just below
                torch.manual_seed(seed)
                try:
                    model, _, preprocess = open_clip.create_model_and_transforms(name)
                except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
                    raise ModelFileError(
                        f"model {name!r}: open_clip cannot build a model from its config; "
                        "check its fields' types and sizes (whole numbers; width a multiple "
                        "of head_width)") from e
            if ckpt is None:
                model_id = f"{name}@random-init:seed={seed}:cfg={config_digest(cfg)}"
            else:
                load_checkpoint(model, ckpt, name)
                model_id = f"{name}@sha256:{file_sha256(ckpt)}"
        tokenizer = _tokenizer(name, cfg)
    return VLM(model, preprocess, tokenizer, name=name, pretrained=pretrained, checkpoint=ckpt,
               model_id=model_id, device=dev, amp_dtype=amp_dtype)


def load_checkpoint(model: nn.Module, path: Path, name: str) -> None:
    """Load a local state-dict file into ``model`` (tensors only: pickled code is refused)."""
    try:
        open_clip.load_checkpoint(model, str(path))
    except Exception as e:  # torch raises UnpicklingError/RuntimeError; safetensors its own
        text = str(e)
        if "Weights only load failed" in text or "Unpickl" in type(e).__name__:
            raise ModelFileError(
                f"checkpoint {path} is refused: it is not a plain tensor state dict (loading "
                "it would run pickled code); save the weights with torch.save(state_dict) or "
                "safetensors") from e
        first = " ".join(text.strip().splitlines()[:3])[:400]
        raise ModelFileError(f"checkpoint {path} does not fit model {name!r}: {first}") from e
