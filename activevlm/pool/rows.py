"""A lazy view of chosen rows of a pool array, sliceable like the array itself."""

from __future__ import annotations

import numpy as np


class RowView:
    """Rows ``rows`` of a row-sliceable array (``ShardedArray``, ndarray), read only when
    indexed: ``view[key]`` is ``float32 array[rows[key]]``; ``shape`` is ``[len(rows), ...]``.
    Pass one where an ``[n, d]`` activation source is read chunk by chunk (``logit_moments``,
    ``estimate_kfac``). Each read asks the array for its rows in ascending order (a shuffled
    selection still reads a memory map forwards) and puts them back in the view's order."""

    def __init__(self, array, rows: np.ndarray) -> None:
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        rows = self.rows[key]
        if rows.ndim == 0:
            return np.asarray(self.array[int(rows)], dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float32)
        out[order] = self.array[rows[order]]
        return out
