"""Rows that must not be selected (already labelled or queued), as a boolean mask."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Exclude = np.ndarray | Iterable[int] | None


def exclusion_mask(n: int, exclude: Exclude) -> np.ndarray:
    """Boolean ``[N]`` mask of excluded rows from a mask ``[N]`` or an iterable of row ids."""
    mask = np.zeros(n, dtype=bool)
    if exclude is None:
        return mask
    arr = np.asarray(exclude if isinstance(exclude, np.ndarray) else list(exclude))
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"exclusion mask has shape {list(arr.shape)}, expected [{n}]")
        return arr.copy()
    if arr.size == 0:
        return mask
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"exclude must be a boolean mask or integer row ids, got {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"excluded row ids must lie in [0, {n}), got {arr.min()}..{arr.max()}")
    mask[arr] = True
    return mask
