"""Zero-shot classification of a pool's images, deterministic and Bayesian, per domain.

The deterministic model classifies with the head's logits ``s cos(g, h) (+ b)``; the
Bayesian one with the posterior predictive (probit over ProbCosine moments, or Monte Carlo
over joint posterior draws). Both use the same link (``bayes.probcosine``): softmax for CLIP,
per-class sigmoids normalised over the classes for SigLIP (``link="auto"``), so the two rows
of a table differ only in the posterior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch

from activevlm.bayes.probcosine import DEFAULT_CHUNK, logit_moments, mc_probs, probit_probs
from activevlm.metrics.calibration import N_BINS, calibration_summary
from activevlm.models.links import link_for, link_probs
from activevlm.utils.device import resolve_device
from activevlm.utils.validation import check_indices

Predictive = Literal["probit", "mc"]
METRICS = ["n", "accuracy", "nll", "ece", "brier"]
ALL = "all"


@dataclass
class ZeroShotPredictions:
    """Class probabilities of the evaluated items.

    ``indices [n]`` pool rows, ``labels [n]`` positions into ``class_ids`` (the evaluated
    classes: all of them, or the dataset's ``class_subset``), ``domains [n]`` (str or None),
    ``probs``: model name -> ``[n, len(class_ids)]`` float64.
    """

    indices: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    class_ids: np.ndarray
    probs: dict[str, np.ndarray] = field(default_factory=dict)


def _select(pool, indices, domain, split) -> np.ndarray:
    if indices is None:
        idx = pool.indices(domain=domain, split=split, labelled=True)
        if len(idx) == 0:
            raise ValueError(f"pool {pool.path}: no labelled items with domain={domain!r}, "
                             f"split={split!r} (splits present: "
                             f"{sorted(pool.items['split'].dropna().unique().tolist())})")
        return idx
    if domain is not None or split is not None:
        raise ValueError("pass either indices or domain/split filters, not both")
    idx = np.asarray(indices, dtype=np.int64)
    check_indices(idx, f"indices (rows of pool {pool.path})", len(pool.items))
    idx = idx[pool.items["label"].to_numpy()[idx] >= 0]
    if len(idx) == 0:
        raise ValueError(f"pool {pool.path}: none of the given indices has a known label")
    return idx


def _label_positions(labels: np.ndarray, class_ids: np.ndarray, pool) -> np.ndarray:
    pos = np.full(int(max(labels.max(), class_ids.max())) + 1, -1, dtype=np.int64)
    pos[class_ids] = np.arange(len(class_ids))
    out = pos[labels]
    if (out < 0).any():
        bad = int(labels[out < 0][0])
        raise ValueError(f"pool {pool.path}: label {bad} is not in the dataset's class_subset "
                         f"({len(class_ids)} classes)")
    return out


@torch.no_grad()
def predict_zeroshot(
    pool,
    posterior=None,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    domain: str | Sequence[str] | None = None,
    split: str | Sequence[str] | None = None,
    predictive: Predictive = "probit",
    variant: Literal["full", "diag"] = "full",
    mc_samples: int = 64,
    seed: int = 0,
    link: Literal["auto", "softmax", "sigmoid"] = "auto",
    class_subset: Sequence[int] | Literal["auto"] | None = "auto",
    chunk_size: int = DEFAULT_CHUNK,
    device: str | torch.device | None = "auto",
) -> ZeroShotPredictions:
    """Zero-shot class probabilities for the labelled items of ``pool``.

    Items: ``indices`` (pool rows; unlabelled ones are dropped) or the ``domain``/``split``
    filters. ``class_subset="auto"`` uses the dataset's ``class_subset`` when recorded;
    logits are then restricted to those classes. ``predictive="mc"`` averages the
    probabilities of ``mc_samples`` joint posterior draws made from ``seed`` (the same draws
    for every chunk of images). The deterministic model is always included; the Bayesian one
    when ``posterior`` is given (its ``model_id`` must match the pool's when both are known).
    """
    if predictive not in ("probit", "mc"):
        raise ValueError(f"predictive must be 'probit' or 'mc', got {predictive!r}")
    if posterior is not None and posterior.model_id and posterior.model_id != pool.model_id:
        raise ValueError(f"posterior was fitted for model_id {posterior.model_id!r} but pool "
                         f"{pool.path} was embedded with {pool.model_id!r}")
    idx = _select(pool, indices, domain, split)
    subset = pool.class_subset if class_subset == "auto" else class_subset
    class_ids = np.arange(len(pool.classnames)) if subset is None else np.asarray(subset)
    labels = _label_positions(pool.items["label"].to_numpy()[idx], class_ids, pool)
    domains = pool.items["domain"].to_numpy()[idx]
    dev = resolve_device(device)
    head = pool.head.to(dev)
    link_name = link_for(head) if link == "auto" else link
    txt = torch.from_numpy(pool.text_activations[class_ids]).to(dev)
    img, res = pool.rows(idx, lazy=True)

    det = []
    h = head.text_embeddings(txt)
    for start in range(0, len(idx), chunk_size):
        sl = slice(start, start + chunk_size)
        act = torch.from_numpy(img[sl]).to(dev)
        r = None if res is None else torch.from_numpy(res[sl]).to(dev)
        det.append(link_probs(head.logits(head.image_embeddings(act, r), h), link_name))
    out = ZeroShotPredictions(idx, labels, domains, class_ids,
                              {"deterministic": torch.cat(det).double().cpu().numpy()})
    if posterior is None:
        return out

    post = posterior.to(dev)
    if predictive == "probit":
        mean, var = logit_moments(post, img, txt, variant=variant, residual=res,
                                  chunk_size=chunk_size)
        probs = probit_probs(mean, var, link_name)
    else:
        per = max(1, min(chunk_size, (1 << 24) // max(1, mc_samples * len(class_ids))))
        parts = []
        for start in range(0, len(idx), per):
            sl = slice(start, start + per)
            gen = torch.Generator().manual_seed(seed)  # same joint draws for every chunk
            parts.append(mc_probs(post, img[sl], txt, mc_samples, gen,
                                  residual=None if res is None else res[sl],
                                  link=link_name, chunk_size=per).mean(0))
        probs = torch.cat(parts)
    out.probs["bayesian"] = probs.double().cpu().numpy()
    return out


def summarize(predictions: ZeroShotPredictions, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per (model, domain) plus domain ``"all"``: ``n``, accuracy, NLL, ECE, Brier."""
    doms = pd.Series(predictions.domains)
    groups = [ALL] + sorted(doms.dropna().unique().tolist()) if doms.notna().any() else [ALL]
    rows = []
    for model, probs in predictions.probs.items():
        for d in groups:
            mask = np.ones(len(doms), bool) if d == ALL else (doms == d).to_numpy()
            rows.append({"model": model, "domain": d,
                         **calibration_summary(probs[mask], predictions.labels[mask], n_bins)})
    return pd.DataFrame(rows, columns=["model", "domain", *METRICS])


def evaluate_zeroshot(pool, posterior=None, *, n_bins: int = N_BINS, **kwargs) -> pd.DataFrame:
    """``summarize(predict_zeroshot(pool, posterior, **kwargs))``: the metrics table.

    Columns ``model`` (deterministic | bayesian), ``domain`` (each domain, and ``"all"``),
    ``n``, ``accuracy``, ``nll``, ``ece`` (``n_bins`` equal-width bins), ``brier``.
    """
    return summarize(predict_zeroshot(pool, posterior, **kwargs), n_bins)
