"""Targeted selection through the pool index: the unique nearest pool rows of target points."""

from __future__ import annotations

import math

import numpy as np

from activevlm.index.exclusion import Exclude, exclusion_mask
from activevlm.index.streamed import NeighbourSearch


def nearest_unique(
    pool_index: NeighbourSearch, target_emb_chosen, n_wanted: int, *, exclude: Exclude = None
) -> np.ndarray:
    """Map chosen target points ``[T, D]`` to ``<= n_wanted`` distinct pool rows.

    Round-robin over the targets in the given order (best first): each takes its nearest
    pool neighbour that is neither excluded nor already taken; when ``n_wanted > T`` further
    rounds take second-nearest neighbours and so on. Returns rows in the order taken; fewer
    than ``n_wanted`` only when the non-excluded pool runs out. Only the first
    ``n_wanted`` targets can take a row, so only they are searched. ``pool_index``: an
    :class:`~activevlm.index.EmbeddingIndex` or a
    :class:`~activevlm.index.streamed.StreamedNeighbours`.
    """
    targets = np.asarray(target_emb_chosen, dtype=np.float32)
    if targets.ndim != 2 or len(targets) == 0:
        raise ValueError(f"target_emb_chosen must be a non-empty [T, D] array, got {targets.shape}")
    excluded = exclusion_mask(pool_index.n, exclude)
    available = int((~excluded).sum())
    n_wanted = min(n_wanted, available)
    if n_wanted <= 0:
        return np.empty(0, dtype=np.int64)
    targets = targets[:n_wanted]
    fetch = min(available, math.ceil(n_wanted / len(targets)) + 8)
    while True:
        taken_rows, exhausted = _round_robin(pool_index, targets, n_wanted, fetch, excluded)
        if not exhausted or fetch >= available:
            return np.asarray(taken_rows, dtype=np.int64)
        fetch = min(available, 2 * fetch)


def _round_robin(
    pool_index: NeighbourSearch, targets: np.ndarray, n_wanted: int, fetch: int,
    excluded: np.ndarray,
) -> tuple[list[int], bool]:
    """One greedy pass with ``fetch`` neighbours per target; ``exhausted`` says a target ran
    out of fetched neighbours before ``n_wanted`` rows were taken (fetch more and redo)."""
    _, neighbours = pool_index.search(targets, fetch, exclude=excluded)
    taken = np.zeros(pool_index.n, dtype=bool)
    pointer = np.zeros(len(targets), dtype=np.int64)
    out: list[int] = []
    while len(out) < n_wanted:
        for t, row in enumerate(neighbours):
            p = pointer[t]
            while p < fetch and (row[p] < 0 or taken[row[p]]):
                p += 1
            pointer[t] = p
            if p == fetch:
                return out, True
            taken[row[p]] = True
            out.append(int(row[p]))
            if len(out) == n_wanted:
                break
    return out, False
