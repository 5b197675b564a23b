"""Fit a BayesVLM posterior on the cached activations of a feature pool."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.pool.rows import RowView

FIT_MODES = ("auto", "pairs", "labels")


def resolve_fit_mode(pool, mode: str) -> str:
    """``"auto"`` -> ``"pairs"`` when the pool has caption activations, else ``"labels"``."""
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    if mode == "auto":
        return "pairs" if pool.caption_activations is not None else "labels"
    if mode == "pairs" and pool.caption_activations is None:
        raise ValueError(f"mode 'pairs' needs captions but pool {pool.path} has no caption "
                         "activations; use mode 'labels'")
    return mode


def fit_pool_posterior(
    pool,
    *,
    mode: str = "auto",
    split: str | Sequence[str] | None = None,
    domain: str | Sequence[str] | None = None,
    pseudo_count: float = 1.0,
    prior_precision: float | None = None,
    batch_size: int = 4096,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> BayesVLMPosterior:
    """KFAC Laplace posterior of ``pool.head`` from the pool items matching ``split``/``domain``.

    ``mode="pairs"``: images with their caption activations; ``"labels"``: images against the
    class prompt ensembles (labels are not needed: the GGN does not depend on them).
    Items are shuffled with ``seed`` before being cut into class batches of ``batch_size``.
    ``prior_precision=None`` maximises the Laplace evidence per modality. Activations are read
    from the pool's memory map one batch at a time (``batch_size`` rows in memory, whatever
    the number of items).
    """
    mode = resolve_fit_mode(pool, mode)
    idx = pool.indices(domain=domain, split=split)
    if len(idx) == 0:
        raise ValueError(f"pool {pool.path}: no items with split={split!r}, domain={domain!r} "
                         f"(splits present: "
                         f"{sorted(pool.items['split'].dropna().unique().tolist())})")
    idx = idx[np.random.default_rng(seed).permutation(len(idx))]
    image_act, residual = pool.rows(idx, lazy=True)  # read one KFAC batch at a time
    text_act = (RowView(pool.caption_activations, idx) if mode == "pairs"
                else pool.text_activations)
    description = {"pool": str(pool.path), "mode": mode, "split": split, "domain": domain,
                   "n_images": int(len(idx)), "seed": seed, "batch_size": batch_size}
    return BayesVLMPosterior.fit(
        pool.head, image_act, text_act, mode=mode, batch_size=batch_size,
        image_residual=residual, pseudo_count=pseudo_count, prior_precision=prior_precision,
        model_id=pool.model_id, data_description=description, device=device,
        progress=progress,
    )
