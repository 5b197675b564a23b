"""ViLU on a feature pool: train on zero-shot correctness, score items, compare with baselines.

Candidates per item: the class prompt embeddings (class setting), or the captions of its
block of ``config.batch_size`` consecutive selected items (caption setting), exactly as in
training. Embeddings come from the pool's cached activations through its projection head.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from activevlm.bayes.probcosine import logit_moments
from activevlm.metrics.failure import baseline_confidences
from activevlm.pool import Pool
from activevlm.utils.device import resolve_device
from activevlm.vilu.estimator import ViLUModel, failure_probability
from activevlm.vilu.model import ViLUConfig
from activevlm.vilu.train import fit_vilu, zero_shot_correct

CHUNK = 4096


def _caption_pool(pool: Pool) -> None:
    if pool.caption_activations is None:
        raise ValueError(f"pool {pool.path} has no captions; the caption setting needs them")


def fit_vilu_on_pool(
    pool: Pool,
    *,
    split: str | None = "train",
    domain: str | list[str] | None = None,
    config: ViLUConfig | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> ViLUModel:
    """Train ViLU on the zero-shot correctness of ``pool.head`` over the labelled items of
    ``split``/``domain`` (class setting), or on caption retrieval within batches (caption
    setting, all selected items). The predictor records ``pool.model_id``."""
    config = config or ViLUConfig()
    captions = config.setting == "captions"
    idx = pool.indices(domain=domain, split=split, labelled=None if captions else True)
    if idx.size == 0:
        raise ValueError(f"pool {pool.path} has no {'' if captions else 'labelled '}items with "
                         f"split={split!r}, domain={domain!r}")
    img = pool.image_embeddings(idx)
    common = dict(config=config, logit_scale=pool.head.logit_scale, model_id=pool.model_id,
                  device=device, progress=progress)
    if captions:
        _caption_pool(pool)
        return fit_vilu(img, pool.caption_embeddings(idx), **common)
    txt, _, labels = _class_candidates(pool)
    return fit_vilu(img, txt, zero_shot_correct(img, txt, labels[idx]), **common)


@dataclass
class PoolFailureScores:
    """Per-item results over ``indices [n]``: ``correct [n]`` (zero-shot prediction right;
    None when labels are unknown) and ``confidences`` name -> ``[n]`` (higher = more confident;
    ``"vilu"`` is ViLU's logit of P(correct))."""

    indices: np.ndarray
    correct: np.ndarray | None
    confidences: dict[str, np.ndarray]

    @property
    def failure_probability(self) -> np.ndarray:
        """ViLU's failure probability ``sigmoid(-logit)`` ``[n]``."""
        return failure_probability(self.confidences["vilu"])


def _blocks(model: ViLUModel, pool: Pool, idx: np.ndarray) -> Iterator[tuple]:
    """``(rows, image_emb, text_emb, text_act, targets)`` per block of items."""
    if model.config.setting == "captions":
        _caption_pool(pool)
        b = model.config.batch_size
        for start in range(0, idx.size, b):
            rows = idx[start:start + b]
            yield (rows, pool.image_embeddings(rows), pool.caption_embeddings(rows),
                   pool.caption_activations[rows], np.arange(rows.size))
    else:
        txt, txt_act, labels = _class_candidates(pool)
        for start in range(0, idx.size, CHUNK):
            rows = idx[start:start + CHUNK]
            yield rows, pool.image_embeddings(rows), txt, txt_act, labels[rows]


def _class_candidates(pool: Pool) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Candidate class embeddings ``[C', D]``, their activations and the items' labels as
    positions among them: all classes, or the dataset's ``class_subset`` (ImageNet-R/A),
    so correctness means what zero-shot evaluation means. Unknown labels stay -1."""
    labels = pool.items["label"].to_numpy()
    subset = pool.class_subset
    if subset is None:
        return pool.text_embeddings(), np.asarray(pool.text_activations), labels
    position = np.full(len(pool.classnames), -1, dtype=np.int64)
    position[subset] = np.arange(len(subset))
    outside = sorted(set(labels[labels >= 0].tolist()) - set(subset))
    if outside:
        raise ValueError(f"pool {pool.path}: labels {outside[:10]} are outside the dataset's "
                         "class_subset")
    mapped = np.where(labels >= 0, position[np.maximum(labels, 0)], -1)
    return (pool.text_embeddings()[subset], np.asarray(pool.text_activations)[subset], mapped)


@torch.no_grad()
def pool_failure_scores(
    model: ViLUModel,
    pool: Pool,
    indices=None,
    *,
    baselines: bool = True,
    posterior=None,
    device: str | torch.device = "auto",
) -> PoolFailureScores:
    """ViLU (and, with ``baselines``, MSP/entropy/DOCTOR; with a ``BayesVLMPosterior``, its
    predictive variance) over pool rows ``indices`` (default: all). Refuses a predictor
    trained for another model."""
    if model.model_id != pool.model_id:
        raise ValueError(f"ViLU model was trained for model {model.model_id!r}, but pool "
                         f"{pool.path} uses {pool.model_id!r}")
    if posterior is not None and posterior.model_id not in (None, pool.model_id):
        raise ValueError(f"posterior was fitted for model {posterior.model_id!r}, but pool "
                         f"{pool.path} uses {pool.model_id!r}")
    idx = np.arange(len(pool)) if indices is None else np.asarray(indices, dtype=np.int64)
    dev = resolve_device(device)
    net = model.net.to(dev).eval()
    parts: dict[str, list[np.ndarray]] = {}
    correct: list[np.ndarray] = []
    for rows, img, txt, txt_act, targets in _blocks(model, pool, idx):
        img, txt = img.to(dev), txt.to(dev)
        parts.setdefault("vilu", []).append(net(img, txt).cpu().numpy())
        logits = pool.head.logits(img, txt)
        correct.append(logits.argmax(dim=1).cpu().numpy() == targets)
        if not baselines:
            continue
        var = None
        if posterior is not None:
            act, res = pool.rows(rows)
            _, var = logit_moments(posterior, act, txt_act, residual=res)
            var = var.cpu().numpy()
        probs = pool.head.probs(img, txt).cpu().numpy()
        for name, conf in baseline_confidences(probs, var).items():
            parts.setdefault(name, []).append(conf)
    confidences = {k: np.concatenate(v) for k, v in parts.items()}
    if not confidences:
        confidences = {"vilu": np.zeros(0, dtype=np.float32)}
    known = model.config.setting == "captions" or bool(
        (pool.items["label"].to_numpy()[idx] >= 0).all())
    y = (np.concatenate(correct) if correct else np.zeros(0, dtype=bool)) if known else None
    return PoolFailureScores(idx, y, confidences)


def failure_scores(model: ViLUModel, pool_or_embeddings, indices=None, *,
                   device: str | torch.device = "auto") -> np.ndarray:
    """ViLU failure probabilities ``[n]`` for acquisition (higher = more likely wrong).

    ``pool_or_embeddings``: a ``Pool`` (rows ``indices``, default all; the predictor must have
    been trained for ``pool.model_id``) or a tuple ``(image_emb [N, D], text_emb [K, D])``
    (optionally with a candidate ``mask [N, K]``) of cached embeddings. This is the function
    the acquisition layer registers as strategy ``vilu``: its output feeds the same batch
    selection (top-k, stochastic, class-balanced, targeted) as any other score.
    """
    if isinstance(pool_or_embeddings, Pool):
        scores = pool_failure_scores(model, pool_or_embeddings, indices, baselines=False,
                                     device=device)
        return scores.failure_probability
    if indices is not None:
        raise ValueError("indices apply to a Pool; slice the embeddings yourself")
    return model.predict_failure(*pool_or_embeddings, device=device)

