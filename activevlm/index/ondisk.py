"""An IVF index built in bounded memory: trained on a sample, filled shard by shard, merged on
disk into FAISS's ``OnDiskInvertedLists`` and searched memory-mapped.

Steps, each with anonymous memory independent of the pool size ``N`` (the merge also maps
the blocks and the output file, ``2·N·D·4`` bytes of page cache that count in RSS but that
the kernel reclaims: the 10⁶ build runs under a 1.3 GB cgroup limit, benchmarks/README.md):

1. :func:`train_ivf`: k-means on ``sample_per_list · nlist`` seeded sample rows,
   ``niter`` iterations (cost ``O(sample · nlist · niter · D)``, bounded by the arguments);
2. :func:`fill_block`: one shard's rows added to a copy of the trained index and written as
   its own file (one unit of work): :func:`fill_blocks` fills them one after the other in
   this process, :func:`activevlm.index.ray_build.fill_blocks_ray` as Ray tasks (any
   :data:`BlockFiller`);
3. :func:`merge_blocks`: ``faiss.contrib.ondisk.merge_ondisk`` concatenates the blocks'
   inverted lists into ``<name>.ivfdata``; the index file only references it, and the
   lists are memory-mapped from it (paged in by searches, not loaded); ``READ_FLAGS``
   finds the file beside the index wherever the folder has moved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from activevlm.utils.io import atomic_path

READ_FLAGS = faiss.IO_FLAG_ONDISK_SAME_DIR

BlockFiller = Callable[[Path, object, Sequence[slice], Sequence[Path]], list[Path]]
"""``fill(trained, embeddings, row_ranges, outs)``: writes block ``outs[k]`` holding rows
``row_ranges[k]`` (:func:`fill_block`) for every ``k``; returns ``outs``."""


def _normalised(x) -> np.ndarray:
    """Rows of ``x`` (``[n, D]``, or one ``[D]`` vector) as a float32 C-contiguous copy with unit
    L2 norm: ``[n, D]``. Shared with ``embedding_index``."""
    a = np.array(x, dtype=np.float32, copy=True, order="C")
    if a.ndim == 1:
        a = a[None]
    faiss.normalize_L2(a)
    return a


def train_ivf(embeddings, nlist: int, *, sample_per_list: int = 32, niter: int = 10,
              seed: int = 0) -> faiss.IndexIVFFlat:
    """An empty inner-product ``IndexIVFFlat`` over ``embeddings [N, D]`` (row-sliceable),
    its ``nlist`` centroids fitted by k-means on ``min(N, sample_per_list · nlist)`` seeded
    rows (normalised) in ``niter`` iterations."""
    n, d = embeddings.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, sample_per_list * nlist), replace=False))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, niter
    index.cp.max_points_per_centroid = max(sample_per_list, 1)  # no second subsampling
    index.cp.min_points_per_centroid = min(39, sample_per_list)  # the sample size is chosen
    index.train(_normalised(embeddings[sample]))
    return index


def fill_block(trained: str | Path | np.ndarray, embeddings, rows: slice, out: str | Path,
               chunk_size: int = 65536) -> Path:
    """Add pool rows ``rows`` (ids = row numbers) of ``embeddings`` to a copy of the trained
    index (its file, or its ``faiss.serialize_index`` bytes ``uint8 [B]``) and write it to
    ``out`` (atomically); returns ``out``."""
    index = faiss.deserialize_index(trained) if isinstance(trained, np.ndarray) \
        else faiss.read_index(str(trained))
    for i in range(rows.start, rows.stop, chunk_size):
        j = min(rows.stop, i + chunk_size)
        index.add_with_ids(_normalised(embeddings[i:j]), np.arange(i, j, dtype=np.int64))
    with atomic_path(Path(out)) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(out)


def fill_blocks(trained: Path, embeddings, row_ranges: Sequence[slice],
                outs: Sequence[Path]) -> list[Path]:
    """The :data:`BlockFiller` of one process: :func:`fill_block` for each range in turn."""
    return [fill_block(trained, embeddings, rows, out)
            for rows, out in zip(row_ranges, outs, strict=True)]


def merge_blocks(trained: str | Path, blocks: Sequence[str | Path], folder: str | Path,
                 name: str = "index") -> faiss.Index:
    """Merge filled ``blocks`` into ``<folder>/<name>.ivfdata``; returns the index (its lists
    memory-mapped from that file). The caller writes the index file beside it."""
    index = faiss.read_index(str(trained))
    data = Path(folder) / f"{name}.ivfdata"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.unlink(missing_ok=True)
    merge_ondisk(index, [str(b) for b in blocks], str(data))
    return index


def build_on_disk(embeddings, folder: str | Path, name: str = "index", *, nlist: int,
                  rows_per_block: int = 65536, sample_per_list: int = 32, niter: int = 10,
                  seed: int = 0, fill: BlockFiller = fill_blocks) -> faiss.Index:
    """Train, ``fill`` blocks of ``rows_per_block`` rows, merge; blocks are deleted afterwards.
    Returns the merged index (inverted lists on disk in ``<folder>/<name>.ivfdata``)."""
    folder = Path(folder)
    work = folder / f"{name}.blocks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    trained = work / "trained.faiss"
    faiss.write_index(train_ivf(embeddings, nlist, sample_per_list=sample_per_list,
                                niter=niter, seed=seed), str(trained))
    n = embeddings.shape[0]
    starts = range(0, n, rows_per_block)
    blocks = fill(trained, embeddings, [slice(i, min(n, i + rows_per_block)) for i in starts],
                  [work / f"block-{k:05d}.faiss" for k in range(len(starts))])
    index = merge_blocks(trained, blocks, folder, name)
    shutil.rmtree(work)
    return index
