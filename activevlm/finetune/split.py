"""Stratified hold-out split of a labelled set (the validation data for early stopping)."""

from __future__ import annotations

import numpy as np

from activevlm.utils.validation import check_in_range, check_shape


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices ``[N]`` into ``(train, val)`` per class.

    Each class with ``n_c`` labels contributes ``round(fraction · n_c)`` random rows to the
    validation part, capped at ``n_c − 1`` so every labelled class keeps a training example
    (a class with a single label is never held out). Both parts are sorted; same seed -> same
    split. The validation part is empty when every class is too small.
    """
    check_in_range(fraction, "val_fraction", 0.0, 1.0, high_inclusive=False)
    y = np.asarray(labels)
    check_shape(y, "labels", ("N",))
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(int(round(fraction * idx.size)), idx.size - 1)
        if k > 0:
            val.append(rng.permutation(idx)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    train_mask = np.ones(y.size, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx.astype(np.int64)
