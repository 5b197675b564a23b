"""A lazy view of chosen rows of a pool array, sliceable like the array itself."""

from __future__ import annotations

import numpy as np


class RowView:
    """Rows ``rows`` of a row-sliceable array (``ShardedArray``, ndarray), read only when
    indexed: ``view[key]`` is ``float32 array[rows[key]]``; ``shape`` is ``[len(rows), ...]``.
    Pass one where an ``[n, d]`` activation source is read chunk by chunk (``logit_moments``,
    ``estimate_kfac``)."""

    def __init__(self, array, rows: np.ndarray) -> None:
        self.array, self.rows = array, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.array[self.rows[key]], dtype=np.float32)
