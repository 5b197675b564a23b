"""Training a ViLU predictor on cached embeddings (MATH.md section 4).

Targets: 1 where the zero-shot prediction is right. Loss: BCE with failures weighted by
``w = log(1 + #correct/#wrong)``, computed over the training split by default. A stratified
held-out split drives early stopping on AUROC; the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from activevlm.metrics.failure import auroc
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import row_chunks
from activevlm.utils.training import EarlyStopping, train_epochs
from activevlm.utils.validation import check_labels, check_shape
from activevlm.vilu.estimator import ViLUModel, as_tensor
from activevlm.vilu.model import ViLU, ViLUConfig, check_mask, masked_argmax


def failure_weight(correct) -> float:
    """``log(1 + #correct / #wrong)`` for a boolean ``correct [N]``; needs at least one failure."""
    y = np.asarray(correct, dtype=bool)
    n_wrong = int((~y).sum())
    if n_wrong == 0:
        raise ValueError(f"no failures among {y.size} training items: nothing to learn")
    return math.log1p(int(y.sum()) / n_wrong)


def zero_shot_correct(image_emb, text_emb, labels, mask=None) -> np.ndarray:
    """Whether ``argmax_c cos(image, class c)`` equals the label: ``[N, D], [C, D], [N] -> [N]``
    (bool). ``mask [N, C]`` restricts each image's candidate classes."""
    img = F.normalize(as_tensor(image_emb, "image_emb"), dim=-1)
    txt = F.normalize(as_tensor(text_emb, "text_emb"), dim=-1)
    y = np.asarray(labels, dtype=np.int64)
    check_labels(y, "labels", txt.shape[0], img.shape[0])
    m = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool)
    m = check_mask(m, img.shape[0], txt.shape[0])
    return masked_argmax(img @ txt.T, m).numpy() == y


def caption_correct(image_emb, caption_emb, batch_size: int) -> np.ndarray:
    """Caption setting: whether each image retrieves its own caption among those of its batch
    (consecutive batches of ``batch_size``): ``[N, D], [N, D] -> [N]`` (bool)."""
    img = F.normalize(as_tensor(image_emb, "image_emb"), dim=-1)
    cap = F.normalize(as_tensor(caption_emb, "caption_emb"), dim=-1)
    check_shape(cap, "caption_emb", img.shape, " (one caption per image)")
    out = [
        (img[c] @ cap[c].T).argmax(dim=1).numpy() == np.arange(c.stop - c.start)
        for c in row_chunks(img.shape[0], batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def correctness_split(correct, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices with the same share of failures in both (each class keeps at
    least one item on each side)."""
    y = np.asarray(correct, dtype=bool)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in (True, False):
        idx = rng.permutation(np.flatnonzero(y == cls))
        if idx.size < 2:
            what = "correct" if cls else "wrong"
            raise ValueError(
                f"need at least 2 {what} predictions to hold out a validation split, got "
                f"{idx.size}"
            )
        n_val = min(max(1, round(val_fraction * idx.size)), idx.size - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _weights(y: torch.Tensor, w: float | None) -> torch.Tensor:
    if w is None:  # published per-batch weight
        n_wrong = int((y == 0).sum())
        w = math.log1p(int((y == 1).sum()) / n_wrong) if n_wrong else 1.0
    return torch.where(y > 0, torch.ones_like(y), torch.full_like(y, w))


def fit_vilu(
    image_emb,
    text_emb,
    correct=None,
    *,
    config: ViLUConfig | None = None,
    mask=None,
    logit_scale: float = 100.0,
    model_id: str = "",
    device: str | torch.device = "auto",
    progress: bool = True,
) -> ViLUModel:
    """Train a ViLU predictor on cached embeddings.

    Class setting: ``image_emb [N, D]``, ``text_emb [C, D]`` (class prompt embeddings),
    ``correct [N]`` (zero-shot correctness, e.g. from ``zero_shot_correct``), optional
    candidate ``mask [N, C]``. Caption setting (``config.setting == "captions"``):
    ``text_emb [N, D]`` the paired captions, ``correct`` None (computed per mini-batch).
    ``logit_scale``: the CLIP multiplier ``s`` (attention temperature by default);
    ``model_id``: the VLM the embeddings came from, stored with the predictor.
    """
    config = config or ViLUConfig()
    dev = resolve_device(device)
    img = as_tensor(image_emb, "image_emb")
    txt = as_tensor(text_emb, "text_emb")
    n, dim = check_shape(img, "image_emb", ("N", "D"))
    check_shape(txt, "text_emb", ("K", dim), " (the image embeddings' dim)")
    captions = config.setting == "captions"
    if captions:
        if correct is not None or mask is not None:
            raise ValueError("caption setting: correctness is computed per batch; pass no "
                             "correct/mask")
        if txt.shape[0] != img.shape[0]:
            raise ValueError(f"caption setting needs one caption per image: {img.shape[0]} "
                             f"images, {txt.shape[0]} captions")
        rng = np.random.default_rng(config.seed)
        perm = rng.permutation(img.shape[0])
        n_val = max(1, round(config.val_fraction * img.shape[0]))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        y_val = caption_correct(img[val_idx], txt[val_idx], config.batch_size)
        if y_val.all() or not y_val.any():
            raise ValueError(
                f"caption validation split has {int(y_val.sum())} of {y_val.size} correct; "
                "both outcomes are needed (change batch_size or val_fraction)"
            )
        w = None if config.failure_weight == "batch" else (
            failure_weight(caption_correct(img[train_idx], txt[train_idx], config.batch_size))
            if config.failure_weight == "dataset" else float(config.failure_weight)
        )
        y_all = None
    else:
        if correct is None:
            raise ValueError("class setting needs correct [N] (zero-shot correctness)")
        y_np = np.asarray(correct, dtype=bool)
        check_shape(y_np, "correct", (n,))
        m = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        mask = check_mask(m, img.shape[0], txt.shape[0])
        train_idx, val_idx = correctness_split(y_np, config.val_fraction, config.seed)
        y_val = y_np[val_idx]
        w = None if config.failure_weight == "batch" else (
            failure_weight(y_np[train_idx]) if config.failure_weight == "dataset"
            else float(config.failure_weight)
        )
        y_all = torch.as_tensor(y_np, dtype=torch.float32).to(dev)
        mask = None if mask is None else mask.to(dev)

    img, txt = img.to(dev), txt.to(dev)
    dev_rng = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=dev_rng):
        torch.manual_seed(config.seed)
        net = ViLU(img.shape[1], config, logit_scale).to(dev)
        freeze_steps = 0 if config.keep_attention_frozen else config.freeze_attention_steps
        if freeze_steps:
            net.set_attention_frozen(True)
        params = list(net.parameters())  # frozen ones simply get no gradient
        if config.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(train_idx.size / config.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=config.epochs * steps_per_epoch
        )
        gen = torch.Generator().manual_seed(config.seed)
        train_t = torch.as_tensor(train_idx)
        val_t = torch.as_tensor(val_idx, device=dev)
        step = 0

        def run_epoch(epoch: int) -> tuple[float, dict]:
            nonlocal step
            net.train()
            order = train_t[torch.randperm(train_t.numel(), generator=gen)].to(dev)
            total, count = 0.0, 0
            for b in order.split(config.batch_size):
                if captions:
                    logits = net(img[b], txt[b])
                    with torch.no_grad():
                        sims = F.normalize(img[b], dim=-1) @ F.normalize(txt[b], dim=-1).T
                        y = (sims.argmax(1) == torch.arange(b.numel(), device=dev)).float()
                else:
                    logits = net(img[b], txt, None if mask is None else mask[b])
                    y = y_all[b]
                loss = F.binary_cross_entropy_with_logits(logits, y, weight=_weights(y, w))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if freeze_steps and step == freeze_steps:
                    net.set_attention_frozen(False)
                total += loss.item() * b.numel()
                count += b.numel()
            net.eval()
            with torch.no_grad():
                if captions:
                    val_logits = torch.cat([
                        net(img[val_t[c]], txt[val_t[c]])
                        for c in row_chunks(val_idx.size, config.batch_size)
                    ])
                else:
                    val_logits = net(img[val_t], txt, None if mask is None else mask[val_t])
            val_auc = auroc(y_val, val_logits.cpu().numpy())
            return -val_auc, {"epoch": epoch, "train_loss": total / max(count, 1),
                              "val_auroc": val_auc}

        stopping = EarlyStopping(lambda: copy.deepcopy(net.state_dict()), net.load_state_dict,
                                 config.patience)
        run = train_epochs(run_epoch, config.epochs, stopping, label="ViLU",
                           describe=lambda epoch, row: f"epoch {epoch} val AUROC "
                                                       f"{row['val_auroc']:.3f}",
                           progress=progress)
    net.set_attention_frozen(config.keep_attention_frozen)
    return ViLUModel(net.cpu().eval(), config, model_id, float(logit_scale), w, run.best_epoch,
                     -run.best_key, run.history)
