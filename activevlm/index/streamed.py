"""Exact k-NN streamed over embeddings on disk: no index to train, no copy of the pool in RAM.

For targeted selection (a few thousand queries against the pool) the pool's ``[N, D]`` image
embeddings are read once, ``chunk_rows`` at a time, from their ``.npy`` shards into one reused
buffer with plain file reads (the page cache holds them, the process does not: memory-mapping
would count every touched page in the resident set). Each chunk is normalised, excluded rows
are dropped from it, and its inner products with blocks of queries are merged into a running
top-k. Recall is 1 by construction; memory is ``O(Q·k + chunk_rows·D + query_block·chunk_rows)``
whatever ``N``; time is one ``[Q, D] x [D, N]`` product. Ties rank the lower row id first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from activevlm.index.exclusion import Exclude, exclusion_mask


class NeighbourSearch(Protocol):
    """What targeted selection needs of a pool index: its size and masked k-NN search."""

    @property
    def n(self) -> int: ...

    def search(self, queries, k: int, *,
               exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]: ...


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-ordered ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered arrays are not supported")
        return shape, dtype, fh.tell()


def _read_into(fh, view: memoryview, path: Path) -> None:
    """Fill ``view`` from ``fh`` (unbuffered reads may return short)."""
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise ValueError(f"{path}: file ends early (truncated shard?)")
        got += n


class StreamedNeighbours:
    """Exact cosine k-NN over the rows of ``.npy`` shards ``[n_k, D]`` (float32), in order.

    ``search`` has the contract of :meth:`EmbeddingIndex.search`: ``(sims [Q, k] float32,
    ids [Q, k] int64)``, excluded rows never returned, rows padded with id -1 and similarity
    -inf when fewer than ``k`` rows are left; rows of equal similarity come lowest id first.
    """

    def __init__(self, files: Sequence[str | Path], dim: int, *, chunk_rows: int = 16384,
                 query_block: int = 1024):
        if chunk_rows < 1 or query_block < 1:
            raise ValueError(f"chunk_rows and query_block must be >= 1, got {chunk_rows}, "
                             f"{query_block}")
        self.files = [Path(f) for f in files]
        self.dim, self.chunk_rows, self.query_block = dim, chunk_rows, query_block
        self._layout = []
        for f in self.files:
            shape, dtype, offset = _npy_layout(f)
            if len(shape) != 2 or shape[1] != dim or dtype != np.dtype("<f4"):
                raise ValueError(f"{f}: expected a float32 array of shape [n, {dim}], found "
                                 f"{dtype} {list(shape)}")
            self._layout.append((shape[0], offset))
        self._n = sum(rows for rows, _ in self._layout)

    @classmethod
    def from_sharded(cls, array, **kwargs) -> StreamedNeighbours:
        """Over the shard files of a :class:`~activevlm.pool.sharded.ShardedArray`."""
        return cls(array.files, array.shape[1], **kwargs)

    @property
    def n(self) -> int:
        return self._n

    def chunks(self):
        """Yield ``(first row, normalised rows [<=chunk_rows, D])``; the array is a reused
        buffer, valid until the next chunk."""
        buf = np.empty((self.chunk_rows, self.dim), dtype=np.float32)
        start = 0
        for path, (rows, offset) in zip(self.files, self._layout, strict=True):
            with open(path, "rb", buffering=0) as fh:
                fh.seek(offset)
                for lo in range(0, rows, self.chunk_rows):
                    m = min(self.chunk_rows, rows - lo)
                    _read_into(fh, memoryview(buf[:m]).cast("B"), path)
                    faiss.normalize_L2(buf[:m])
                    yield start + lo, buf[:m]
            start += rows

    def search(self, queries, k: int, *, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar non-excluded rows per query (one pass over the shards)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.array(queries, dtype=np.float32, copy=True, order="C")
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got {list(q.shape)}")
        faiss.normalize_L2(q)
        excluded = exclusion_mask(self.n, exclude)
        best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        best_i = np.full((len(q), k), -1, dtype=np.int64)
        for start, x in self.chunks():
            ids = np.arange(start, start + len(x), dtype=np.int64)
            keep = ~excluded[start : start + len(x)]
            if not keep.all():
                x, ids = x[keep], ids[keep]
            if len(ids) == 0:
                continue
            for b in range(0, len(q), self.query_block):
                block = slice(b, b + self.query_block)
                merge_topk(best_s[block], best_i[block], q[block] @ x.T, ids)
        return best_s, best_i


def merge_topk(best_s: np.ndarray, best_i: np.ndarray, sims: np.ndarray, ids: np.ndarray) -> None:
    """Merge the similarities ``sims [b, c]`` of rows ``ids [c]`` (ascending, all above every
    id in ``best_i``) into the running top-k ``best_s / best_i [b, k]`` (in place; sorted by
    similarity descending, then id ascending). Only entries beating a row's current k-th
    best can enter (equal ones lose: their ids are higher); a chunk that would offer many
    first keeps only its own top-k per row (ties included)."""
    b, k = best_s.shape
    cand = sims > best_s[:, -1:]
    if sims.shape[1] > k and np.count_nonzero(cand) > 4 * b * k:
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1 : k]
        cand &= sims >= kth
    r, j = np.nonzero(cand)
    if r.size == 0:
        return
    rows = np.unique(r)
    all_r = np.concatenate([np.repeat(rows, k), r])
    all_s = np.concatenate([best_s[rows].ravel(), sims[r, j]])
    all_i = np.concatenate([best_i[rows].ravel(), ids[j]])
    order = np.lexsort((all_i, -all_s, all_r))
    all_r, all_s, all_i = all_r[order], all_s[order], all_i[order]
    first = np.searchsorted(all_r, rows)  # where each row's run starts
    rank = np.arange(len(all_r)) - np.repeat(first, np.diff(np.append(first, len(all_r))))
    top = rank < k
    best_s[all_r[top], rank[top]] = all_s[top]
    best_i[all_r[top], rank[top]] = all_i[top]
