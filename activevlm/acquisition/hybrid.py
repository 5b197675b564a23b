"""Coverage and EPIG together: greedy EPIG (or BALD) over TypiClust's typical representatives.

Why this hybrid. Three measured or known failure modes pull in different directions:

- Top-k EPIG spends a batch on near-copies (PACS: mean pairwise cosine 0.95 of the picks).
  Greedy conditioning removes a copy only as far as one label moves the posterior, by the
  factor ``1/(1 + c·v)`` on the pick's own variance; on KFAC posteriors fitted on thousands of
  samples ``c·v`` is small (demo world, 3200 source images, clipart: median 1.5e-3, at most
  0.02; a greedy batch of 25 shares 24 picks with top-25, ``benchmarks/conditioning_strength
  .py``), so greedy batches there stay close to top-k. Diversity has to come from the
  geometry as well.
- EPIG and BALD favour atypical inputs (large ``v(a) = ãᵀÃ⁻¹ã``: outliers), which are poor
  labels while labels are few; TypiClust's typical points win in that regime (Hacohen et al.,
  2022).
- TypiClust alone ignores the target distribution and the model's uncertainty.

Rule: k-means with ``|labelled| + ⌈oversample·budget⌉`` clusters over the unit image
embeddings; candidates are the most typical point of each cluster that holds no labelled
point (larger than ``min_cluster_size``; smaller ones only when there are too few); greedy
EPIG/BALD with label-free conditioning picks ``budget`` of them. Properties: at most one pick
per cluster and every pick its cluster's most typical point, whatever ``c·v`` is; EPIG decides
which regions are worth labels. ``oversample = 1`` gives TypiClust's set; a large
``oversample`` tends to greedy EPIG over all points.

Cost: k-means over the N embeddings (``O(N·k·D)`` per iteration), typicality within each
cluster (FAISS k-NN), then :func:`greedy_batch` on ``⌈oversample·budget⌉`` candidates.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from activevlm.acquisition.coverage import kmeans_labels, typical_representatives, unit_rows
from activevlm.acquisition.greedy import GreedyBatch, greedy_batch
from activevlm.index.exclusion import Exclude, exclusion_mask


def typical_greedy(
    posterior,
    text_act,
    pool_act,
    embeddings,
    budget: int,
    *,
    labelled: Exclude = None,
    heuristic: Literal["epig", "bald"] = "epig",
    target_act=None,
    residual=None,
    target_residual=None,
    oversample: float = 3.0,
    k_neighbours: int = 20,
    min_cluster_size: int = 5,
    n_draws: int = 100,
    generator: torch.Generator,
    seed: int = 0,
    lazy: bool = True,
    device: str | torch.device | None = "auto",
) -> GreedyBatch:
    """Greedy EPIG/BALD over typical cluster representatives (see the module docstring).

    ``pool_act [N, d_img]`` (row-sliceable, e.g. ``Pool.image_activations``; + ``residual
    [N, D]``), ``embeddings [N, D]`` the same rows' image embeddings (any scale), ``labelled``
    mask or row ids (labelled or queued: never picked, their clusters skipped). EPIG needs
    ``target_act [M, d_img]``. ``seed`` drives k-means, ``generator`` the joint draws.
    Returns a :class:`GreedyBatch` whose ``positions`` are **pool rows**.
    """
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    x = unit_rows(embeddings)
    n = len(x)
    if pool_act.shape[0] != n:
        raise ValueError(f"pool_act has {pool_act.shape[0]} rows, embeddings {n}")
    lab = exclusion_mask(n, labelled)
    budget = min(budget, int((~lab).sum()))
    labels = kmeans_labels(x, min(n, int(lab.sum()) + math.ceil(oversample * budget)), seed=seed)
    kw = dict(labelled=lab, clusters=labels, k_neighbours=k_neighbours)
    cand = typical_representatives(x, min_cluster_size=min_cluster_size, **kw)
    if len(cand) < budget:  # too few large clusters: the small ones after them
        # (>= ⌈oversample·budget⌉ clusters hold no labelled row, so this reaches the budget)
        small = typical_representatives(x, min_cluster_size=0, **kw)
        cand = np.concatenate([cand, small[~np.isin(small, cand)]])
    idx = np.sort(cand)
    batch = greedy_batch(
        posterior, text_act, np.asarray(pool_act[idx]), budget, heuristic=heuristic,
        target_act=target_act, cand_residual=None if residual is None else residual[idx],
        target_residual=target_residual, n_draws=n_draws, generator=generator, lazy=lazy,
        device=device,
    )
    return GreedyBatch(idx[batch.positions], batch.gains, batch.picks, batch.evaluations)
