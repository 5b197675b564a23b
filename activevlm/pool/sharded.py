"""A read-only 2-D array stitched from memory-mapped ``.npy`` shards (pools bigger than RAM)."""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


class ShardedArray:
    """Rows of several ``[n_k, d]`` ``.npy`` files seen as one ``[sum n_k, d]`` array.

    Shards are opened with ``mmap_mode="r"``, so only the rows that are indexed are read;
    after each read the mapped pages are released (``MADV_DONTNEED``: they stay in the page
    cache, not in this process's resident set), so a pass over a pool bigger than RAM does
    not grow the process by the pool's size.
    Indexing with an int, a slice, an integer array or a boolean mask returns an in-memory
    ``np.ndarray`` (float32 by default); ``np.asarray(arr)`` materialises everything.
    """

    def __init__(self, files: Sequence[str | Path], dim: int, dtype: np.dtype | str = np.float32):
        self.files = [Path(f) for f in files]
        self.dtype = np.dtype(dtype)
        self._shards = [np.load(f, mmap_mode="r") for f in self.files]
        for f, s in zip(self.files, self._shards, strict=True):
            if s.ndim != 2 or s.shape[1] != dim:
                raise ValueError(f"{f}: expected shape [n, {dim}], found {list(s.shape)}")
        self._dim = dim
        sizes = [s.shape[0] for s in self._shards]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._starts[-1]), self._dim

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __reduce__(self):
        """Pickle as the file names, not the data: a copy sent to another process (a loader
        worker, a Ray task) maps the same files."""
        return type(self), (self.files, self._dim, self.dtype)

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, shards={len(self._shards)}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            return self[rows][(slice(None), *cols)] if cols else self[rows]
        n = len(self)
        if isinstance(key, int | np.integer):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"row {i} out of range for {n} rows")
            return self._take(np.array([i % n]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._range(start, max(start, stop))
            return self._take(np.arange(start, stop, step))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask has shape {list(idx.shape)}, expected [{n}]")
            return self._take(np.flatnonzero(idx))
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"cannot index rows with dtype {idx.dtype}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return self._take(idx.reshape(-1) % max(n, 1)).reshape(*idx.shape, self._dim)

    def chunks(self, size: int) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(rows, values [<=size, d])`` over all rows in order, one chunk in memory."""
        for start in range(0, len(self), size):
            rows = slice(start, min(start + size, len(self)))
            yield rows, self[rows]

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self._dim), dtype=self.dtype)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        for k in range(max(first, 0), len(self._shards)):
            if pos >= stop:
                break
            s0, s1 = int(self._starts[k]), int(self._starts[k + 1])
            hi = min(stop, s1)
            if hi > pos:
                out[pos - start : hi - start] = self._shards[k][pos - s0 : hi - s0]
                _release(self._shards[k], pos - s0, hi - s0)
                pos = hi
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((idx.size, self._dim), dtype=self.dtype)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            local = idx[sel] - self._starts[k]
            out[sel] = self._shards[k][local]
            _release(self._shards[k], int(local.min()), int(local.max()) + 1)
        return out


def _release(shard: np.ndarray, lo: int, hi: int) -> None:
    """Drop rows ``lo:hi`` of a memory-mapped shard from the resident set (page-aligned;
    the next read faults them back in from the page cache)."""
    mm = getattr(shard, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    base = shard.offset % mmap.ALLOCATIONGRANULARITY  # where the data starts in the mapping
    a = (base + lo * shard.strides[0]) // mmap.PAGESIZE * mmap.PAGESIZE
    b = min(len(mm), base + hi * shard.strides[0])
    if b > a:
        mm.madvise(mmap.MADV_DONTNEED, a, b - a)

