"""Image embeddings under a head, written once as memory-mapped shards and reused.

A folder (default ``<pool>/embeddings/image-<head fingerprint>/``) holds ``emb-00000.npy``
... (``[n_k, D]`` float32, unnormalised ``head.image_embeddings``) and ``meta.json`` (pool
size, head fingerprint, model id; written last). Every use with the same head reads them
instead of holding ``[N, D]`` in memory. Shards are written atomically under a
``pending.json`` naming the head they belong to, so an interrupted run resumes with the
missing ones, and a folder reused for another head is emptied first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.progress import Progress

from activevlm.models.head import ProjectionHead, head_fingerprint
from activevlm.pool.sharded import ShardedArray
from activevlm.utils.io import atomic_path, atomic_write_json, read_json

EMBEDDINGS_DIR = "embeddings"
ROWS_PER_SHARD = 65536


def image_embedding_shards(pool, head: ProjectionHead | None = None, *,
                           folder: str | Path | None = None,
                           rows_per_shard: int = ROWS_PER_SHARD,
                           progress: bool = False) -> ShardedArray:
    """``[N, D]`` image embeddings of every pool row under ``head`` (default ``pool.head``)
    as a memory-mapped ``ShardedArray``; computed ``rows_per_shard`` rows at a time on first
    use and stored under ``folder`` (default ``<pool>/embeddings/image-<fingerprint>``)."""
    head = pool.head if head is None else head
    folder = Path(folder) if folder is not None else (
        Path(pool.path) / EMBEDDINGS_DIR / f"image-{head_fingerprint(head)}")
    n, dim = len(pool), head.embed_dim
    n_shards = math.ceil(n / rows_per_shard)
    files = [folder / f"emb-{k:05d}.npy" for k in range(n_shards)]
    meta = {"n": n, "dim": dim, "rows_per_shard": rows_per_shard,
            "fingerprint": head_fingerprint(head), "model_id": pool.model_id}
    meta_file, pending = folder / "meta.json", folder / "pending.json"
    if meta_file.exists() and read_json(meta_file) == meta:
        return ShardedArray(files, dim)
    if not (pending.exists() and read_json(pending) == meta):  # another head or pool: redo
        for old in (*folder.glob("emb-*.npy"), meta_file, pending):
            old.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(pending, meta)  # shards written from here on belong to `meta`
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("image embeddings", total=n)
        for k, file in enumerate(files):
            rows = np.arange(k * rows_per_shard, min(n, (k + 1) * rows_per_shard))
            if not file.exists():
                emb = pool.image_embeddings(rows, head).numpy().astype(np.float32, copy=False)
                with atomic_path(file) as tmp:
                    np.save(tmp, emb)
            bar.advance(task, len(rows))
    atomic_write_json(meta_file, meta)
    pending.unlink()
    return ShardedArray(files, dim)
