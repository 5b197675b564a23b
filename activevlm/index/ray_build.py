"""The blocks of the on-disk IVF build (:mod:`activevlm.index.ondisk`) filled by Ray tasks.

The driver trains the quantizer once (:func:`~activevlm.index.ondisk.train_ivf`) and merges
the blocks (:func:`~activevlm.index.ondisk.merge_blocks`) as the single-process build does;
here each block of rows is one Ray task running :func:`~activevlm.index.ondisk.fill_block`.
The trained empty index (its serialised bytes) and the embeddings (memory-mapped pool shards
pickle as their file names) are put in Ray's object store once. Blocks are merged in row
order, so the index is the same, list for list, as the single-process one. The block files
must be on a file system every node sees (the index folder), as must the embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from activevlm.index.ondisk import BlockFiller, fill_block
from activevlm.utils.ray_cluster import connect


def fill_blocks_ray(trained: Path, embeddings, row_ranges: Sequence[slice],
                    outs: Sequence[Path], *, address: str | None = None) -> list[Path]:
    """The :data:`~activevlm.index.ondisk.BlockFiller` on Ray: one task of one CPU per block.

    ``address``: the cluster (:func:`activevlm.utils.ray_cluster.connect`; None = this
    process's Ray session, else a new local one). Each task holds the trained index
    (``nlist · D`` floats) and one block of rows. Returns ``outs`` once every block is written.
    """
    ray = connect(address, progress=False)
    task = ray.remote(num_cpus=1)(fill_block)
    trained_ref = ray.put(np.fromfile(trained, dtype=np.uint8))
    embeddings_ref = ray.put(embeddings)
    outs = [Path(out).resolve() for out in outs]
    ray.get([task.remote(trained_ref, embeddings_ref, rows, out)
             for rows, out in zip(row_ranges, outs, strict=True)])
    return outs


def ray_filler(address: str | None = None) -> BlockFiller:
    """:func:`fill_blocks_ray` bound to a cluster ``address``: the ``fill`` argument of
    :meth:`activevlm.index.EmbeddingIndex.build`."""
    return partial(fill_blocks_ray, address=address)
