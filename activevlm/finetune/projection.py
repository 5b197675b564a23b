"""Fine-tuning the projections of a :class:`ProjectionHead` on labelled cached activations.

Only the linear projections move: the image projection ``W_img`` (and its bias), optionally
the text projection ``W_txt`` (and its bias). The logit scale ``s`` and SigLIP's logit bias
stay fixed. The logits are exactly :meth:`ProjectionHead.logits`, ``s·cos(g, h_c) (+ b)``,
over the ``C`` class prompt embeddings, and the loss is softmax cross-entropy over classes
for every head. For SigLIP heads this replaces the pairwise sigmoid loss of pre-training by
the classification loss of the task: the constant logit bias cancels in the softmax, so it
neither helps nor hurts, and the result is still a valid SigLIP head.

Objective per step (mean over the mini-batch)::

    CE(s·cos(W ã (+ r), h_c)) + l2_to_init · Σ_m ‖θ_m − θ_m⁰‖² / ‖θ_m⁰‖²

where ``θ_m`` is projection ``m`` (weight and bias) and ``θ_m⁰`` its value before fine-tuning.
The penalty is relative (cosine logits do not depend on the scale of ``W``), so one strength
means the same for every model: with the default 1.0 a 30 % change of a projection costs
0.09 nats, little next to the cross-entropy of a wrong class but enough to keep a few labels
from dragging the projection far from the pre-trained one (L2-SP, Li et al. 2018).
AdamW's ``weight_decay`` (decoupled, towards 0) is off by default for the same reason.

Early stopping monitors the validation cross-entropy (ties broken by accuracy) after every
epoch, epoch 0 being the head as given, and restores the best weights: a fine-tuning that
does not beat the starting head on validation returns it unchanged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from activevlm.finetune.split import stratified_split
from activevlm.models.head import ProjectionHead
from activevlm.utils.constraints import Interval, check_constraints
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import to_numpy, to_tensor
from activevlm.utils.training import EarlyStopping, train_epochs
from activevlm.utils.validation import (
    check_labels,
    check_nonempty,
    check_same_length,
    check_shape,
)

ArrayLike = torch.Tensor | np.ndarray
ValidationData = tuple[ArrayLike, ArrayLike] | tuple[ArrayLike, ArrayLike, ArrayLike | None]

EVAL_CHUNK = 8192  # rows per forward pass when evaluating (bounds the [rows, C] logits)


def auto_batch_size(n: int) -> int:
    """Mini-batch size for ``n`` training labels: ~10 steps per epoch, within [8, 256]."""
    return int(min(256, max(8, n // 10)))


@dataclass
class FinetuneConfig:
    """Hyper-parameters of :func:`finetune_head`.

    ``lr`` is AdamW's learning rate in weight units: CLIP projections have entries of order
    ``d_in^-1/2`` ≈ 0.03, so 1e-3 moves them up to ~3 % per step, which reaches the best
    validation loss within a few epochs on thousands of labels (1e-4 needs ~10× more epochs);
    the pull towards the starting weights and early stopping bound the drift; ``max_epochs``
    bounds the passes over the training split; ``patience`` epochs without a better
    validation loss stop training; ``val_fraction`` of each class is held out
    (:func:`stratified_split`) when no validation data is given, 0 disables early stopping;
    ``l2_to_init``: strength of the relative pull towards the starting weights (module
    docstring); ``seed`` drives the split and the mini-batch order; ``device``: "auto" (CUDA
    when present) | "cpu" | "cuda[:i]". ``batch_size=None`` picks :func:`auto_batch_size`,
    so that a few dozen labels still get ~10 optimiser steps per epoch (a fixed 256 gave
    them one step per epoch and left the head under-trained).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 50
    batch_size: int | None = None
    patience: int = 5
    val_fraction: float = 0.2
    train_text: bool = False
    l2_to_init: float = 1.0
    seed: int = 0
    device: str = "auto"

    _constraints = {
        "lr": [Interval(0, None, open_low=True)],
        "weight_decay": [Interval(0, None)],
        "max_epochs": [Interval(1, None, integer=True)],
        "batch_size": [None, Interval(1, None, integer=True)],
        "patience": [Interval(1, None, integer=True)],
        "val_fraction": [Interval(0, 1, open_high=True)],
        "train_text": [bool],
        "l2_to_init": [Interval(0, None)],
        "seed": [Interval(0, None, integer=True)],
        "device": [str],
    }

    def __post_init__(self) -> None:
        check_constraints(self)
        if self.device != "auto":
            resolve_device(self.device)  # a typo or a missing GPU fails before any work


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune_head`.

    ``head``: the fine-tuned head (best epoch's weights); ``history``: one row per epoch
    (0 = the starting head) with ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``,
    ``val_acc`` (cross-entropy and accuracy of the end-of-epoch weights; NaN without
    validation data); ``best_epoch``: the epoch whose weights ``head`` holds;
    ``train_indices`` / ``val_indices``: rows of the given labelled set used for each
    (``val_indices`` is empty when separate validation data was passed).
    """

    head: ProjectionHead
    history: pd.DataFrame
    best_epoch: int
    train_indices: np.ndarray
    val_indices: np.ndarray
    config: FinetuneConfig = field(default_factory=FinetuneConfig)


def _as_float(x: ArrayLike, name: str, cols: int) -> torch.Tensor:
    """``x [N, cols]`` as a float32 CPU tensor (an error names ``name``)."""
    check_shape(x, name, ("N", cols), " to match the head")
    return to_tensor(x.detach() if torch.is_tensor(x) else x, "cpu", torch.float32)


def _as_labels(y: ArrayLike, name: str, n: int, num_classes: int) -> torch.Tensor:
    """``y [n]`` class ids in ``[0, num_classes)`` as an int64 CPU tensor."""
    check_labels(y, name, num_classes, n)
    return torch.as_tensor(to_numpy(y), dtype=torch.int64)


class _Projection:
    """A trainable copy of one projection (weight ``[D, d]``, bias ``[D]`` or None)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, device) -> None:
        def leaf(t):
            return t.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)

        self.weight = leaf(weight)
        self.bias = None if bias is None else leaf(bias)
        self.initial = [p.detach().clone() for p in self.params]
        self.initial_sqnorm = sum(float(p.square().sum()) for p in self.initial)

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def relative_distance(self) -> torch.Tensor:
        """``‖θ − θ⁰‖² / ‖θ⁰‖²`` (differentiable)."""
        sq = sum((p - p0).square().sum() for p, p0 in zip(self.params, self.initial, strict=True))
        return sq / max(self.initial_sqnorm, 1e-30)

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def restore(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, values, strict=True):
                p.copy_(v)


@dataclass
class _Frozen:
    """A projection that is not trained (copied out bit for bit)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class _Trainer:
    """The trainable head plus the fixed data of one fine-tuning run."""

    def __init__(self, head: ProjectionHead, text_act: torch.Tensor, train_text: bool,
                 device: torch.device) -> None:
        self.head, self.device = head, device
        self.image = _Projection(head.image_weight, head.image_bias, device)
        self.text = _Projection(head.text_weight, head.text_bias, device) if train_text else None
        self.text_act = text_act.to(device)
        if self.text is None:
            fixed = head.to(device, torch.float32)
            self.fixed_text = (fixed.text_weight, fixed.text_bias)
            self.fixed_text_emb = fixed.text_embeddings(self.text_act)

    def view(self) -> ProjectionHead:
        """A :class:`ProjectionHead` whose projections are the live (trainable) tensors."""
        h = self.head
        txt_w, txt_b = ((self.text.weight, self.text.bias) if self.text is not None
                        else self.fixed_text)
        return ProjectionHead(self.image.weight, txt_w, h.logit_scale, self.image.bias, txt_b,
                              h.logit_bias)

    def projections(self) -> list[_Projection]:
        return [self.image] if self.text is None else [self.image, self.text]

    def snapshot(self) -> list[list[torch.Tensor]]:
        """Copies of every trained parameter (for early stopping)."""
        return [p.snapshot() for p in self.projections()]

    def restore(self, states: list[list[torch.Tensor]]) -> None:
        for proj, state in zip(self.projections(), states, strict=True):
            proj.restore(state)

    def logits(self, view: ProjectionHead, act: torch.Tensor, residual: torch.Tensor | None,
               text_emb: torch.Tensor) -> torch.Tensor:
        return view.logits(view.image_embeddings(act, residual), text_emb)

    def text_emb(self, view: ProjectionHead) -> torch.Tensor:
        return self.fixed_text_emb if self.text is None else view.text_embeddings(self.text_act)

    def penalty(self) -> torch.Tensor:
        return sum(p.relative_distance() for p in self.projections())

    @torch.no_grad()
    def evaluate(self, act: torch.Tensor, y: torch.Tensor,
                 residual: torch.Tensor | None) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over ``act [n, d_img]`` (NaN, NaN when n = 0)."""
        n = act.shape[0]
        if n == 0:
            return math.nan, math.nan
        view = self.view()
        text_emb = self.text_emb(view)
        loss = correct = 0.0
        for i in range(0, n, EVAL_CHUNK):
            a = act[i:i + EVAL_CHUNK].to(self.device)
            r = None if residual is None else residual[i:i + EVAL_CHUNK].to(self.device)
            yy = y[i:i + EVAL_CHUNK].to(self.device)
            out = self.logits(view, a, r, text_emb)
            loss += float(F.cross_entropy(out, yy, reduction="sum"))
            correct += float((out.argmax(dim=1) == yy).sum())
        return loss / n, correct / n

    def finished_head(self) -> ProjectionHead:
        """The current weights as a plain head on the starting head's device and dtype (a
        projection that was not trained is copied unchanged)."""
        h = self.head
        dev, dt = h.image_weight.device, h.image_weight.dtype

        def out(t):
            return None if t is None else t.detach().to(device=dev, dtype=dt).clone()

        text = self.text if self.text is not None else _Frozen(h.text_weight, h.text_bias)
        return ProjectionHead(out(self.image.weight), out(text.weight), h.logit_scale,
                              out(self.image.bias), out(text.bias), h.logit_bias,
                              dict(h.metadata))


def finetune_head(
    head: ProjectionHead,
    image_act: ArrayLike,
    labels: ArrayLike,
    class_text_act: ArrayLike,
    residual: ArrayLike | None = None,
    val: ValidationData | None = None,
    config: FinetuneConfig | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``head``'s projections with cross-entropy over the class prompts.

    ``image_act [N, d_img]`` labelled pre-projection activations with ``labels [N]`` in
    ``[0, C)``, ``class_text_act [C, d_txt]`` class prompt activations, ``residual [N, D]``
    SigLIP's image residual (or None). ``val = (act [M, d_img], labels [M], residual [M, D] |
    None)`` is the validation data; without it ``config.val_fraction`` of each class is held
    out. The returned head is new (``head`` is not modified) and records the run under
    ``metadata["finetune"]``. Memory: the activations plus ``O(batch_size·C)`` per step.
    """
    cfg = config or FinetuneConfig()
    device = resolve_device(cfg.device)
    text_act = _as_float(class_text_act, "class_text_act", head.text_dim)
    C = text_act.shape[0]
    act = _as_float(image_act, "image_act", head.image_dim)
    check_nonempty(act, "image_act", "at least one labelled image")
    y = _as_labels(labels, "labels", act.shape[0], C)
    res = None if residual is None else _as_float(residual, "residual", head.embed_dim)
    check_same_length(image_act=act, residual=res)

    if val is None:
        train_idx, val_idx = stratified_split(y.numpy(), cfg.val_fraction, cfg.seed)
        tr = torch.as_tensor(train_idx)
        va = torch.as_tensor(val_idx)
        v_act, v_y = act[va], y[va]
        v_res = None if res is None else res[va]
        act, y, res = act[tr], y[tr], None if res is None else res[tr]
    else:
        if len(val) not in (2, 3):
            raise ValueError(f"val must be (act, labels) or (act, labels, residual), "
                             f"got a tuple of {len(val)}")
        v_act = _as_float(val[0], "val act", head.image_dim)
        v_y = _as_labels(val[1], "val labels", v_act.shape[0], C)
        v_res = val[2] if len(val) == 3 else None
        if (v_res is None) != (res is None):
            raise ValueError("residual and val residual must be given together (SigLIP) or "
                             "both be None")
        if v_res is not None:
            v_res = _as_float(v_res, "val residual", head.embed_dim)
        train_idx = np.arange(act.shape[0])
        val_idx = np.empty(0, dtype=np.int64)
    has_val = v_act.shape[0] > 0
    if not has_val and val is None and cfg.val_fraction > 0:
        warnings.warn(f"no class has enough labels to hold out a val_fraction of "
                      f"{cfg.val_fraction}: training all {cfg.max_epochs} epochs without early "
                      f"stopping", stacklevel=2)

    trainer = _Trainer(head, text_act, cfg.train_text, device)
    params = [p for proj in trainer.projections() for p in proj.params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(cfg.seed)
    n = act.shape[0]
    batch_size = cfg.batch_size or auto_batch_size(n)

    def scored(epoch: int) -> tuple[tuple[float, float], dict]:
        tl, ta = trainer.evaluate(act, y, res)
        vl, vacc = trainer.evaluate(v_act, v_y, v_res)
        return (vl, -vacc), {"epoch": epoch, "train_loss": tl, "train_acc": ta,
                             "val_loss": vl, "val_acc": vacc}

    def run_epoch(epoch: int) -> tuple[tuple[float, float], dict]:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            a = act[idx].to(device)
            r = None if res is None else res[idx].to(device)
            view = trainer.view()
            out = trainer.logits(view, a, r, trainer.text_emb(view))
            loss = F.cross_entropy(out, y[idx].to(device))
            if cfg.l2_to_init > 0:
                loss = loss + cfg.l2_to_init * trainer.penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return scored(epoch)

    stopping = EarlyStopping(trainer.snapshot, trainer.restore, cfg.patience) if has_val else None
    run = train_epochs(run_epoch, cfg.max_epochs, stopping, start=scored(0),
                       describe=lambda _, row: f"(val loss {row['val_loss']:.4f})",
                       label="fine-tuning", progress=progress)

    new_head = trainer.finished_head()
    new_head.metadata["finetune"] = {
        "num_train": int(n), "num_val": int(v_act.shape[0]), "best_epoch": run.best_epoch,
        "epochs_run": len(run.history) - 1, "config": asdict(cfg),
    }
    return FinetuneResult(new_head, pd.DataFrame(run.history), run.best_epoch, train_idx,
                          val_idx, cfg)
