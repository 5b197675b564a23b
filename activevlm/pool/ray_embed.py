"""``embed_dataset_ray``: :func:`~activevlm.pool.embed.embed_dataset` as a Ray Data pipeline.

The shard is the unit of work. The driver checks the request, writes the manifest, the plan
and the class text activations exactly as the single-process path does; a Ray Data pipeline
sends each pending shard index to a pool of actors, each holding one copy of the encoder
(one GPU each when ``vlm`` runs on CUDA, else CPU) and embedding the shard with the same
code (:func:`~activevlm.pool.embed.embed_shards`: same batches, same atomic writes, marker
last); the driver then gathers the markers into ``items.parquet`` and ``failures.parquet``
and completes the manifest. A killed run therefore resumes like the single-process one, with
either path. The pool directory must be on a file system every node sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from activevlm.pool.embed import DEFAULT_SHARD_SIZE, embed_dataset, embed_shards
from activevlm.pool.store import Pool
from activevlm.utils.ray_cluster import actor_count, actor_map, connect, import_ray


@dataclass
class _EmbedWork:
    """What every embedding actor needs, put in Ray's object store once."""

    dataset: object
    vlm: object
    out: Path
    plan: pd.DataFrame
    shard_size: int
    batch_size: int
    num_workers: int


class _ShardEmbedder:
    """Ray Data worker: loads the encoder once, then embeds whole shards."""

    def __init__(self, refs: list) -> None:
        self.work: _EmbedWork = import_ray().get(refs[0])
        torch.set_num_threads(1 + self.work.num_workers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        w = self.work
        shards = [int(k) for k in batch["shard"]]
        embed_shards(w.dataset, w.vlm, w.out, w.plan, shards, w.shard_size, w.batch_size,
                     w.num_workers, progress=False)
        return {"shard": np.array(shards)}


def embed_dataset_ray(
    dataset,
    vlm,
    out: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    templates: str | Sequence[str] = "simple",
    address: str | None = None,
    actors: int | None = None,
    progress: bool = True,
) -> Pool:
    """Embed every image of ``dataset`` into the pool ``out`` on a Ray cluster.

    Same arguments, files and resume as :func:`~activevlm.pool.embed.embed_dataset` (the
    activation shards are byte-for-byte the same when the encoder is deterministic), plus:
    ``address`` of the cluster (:func:`activevlm.utils.ray_cluster.connect`; None = the Ray
    session of this process, else a new local one) and ``actors``, the number of encoder
    copies (default: one per GPU of the cluster when ``vlm.device`` is CUDA, else one per
    ``1 + num_workers`` CPUs; never more than the pending shards). Each actor reads its
    shard's images with ``num_workers`` loader processes and ``1 + num_workers`` torch
    threads. ``vlm`` is shipped to the actors once through the object store. Ray is contacted
    only when shards are pending.
    """
    return embed_dataset(dataset, vlm, out, batch_size=batch_size, num_workers=num_workers,
                         shard_size=shard_size, templates=templates, progress=progress,
                         embed_pending=partial(embed_shards_ray, address=address,
                                               actors=actors))


def embed_shards_ray(dataset, vlm, out: Path, plan: pd.DataFrame, pending: list[int],
                     shard_size: int, batch_size: int, num_workers: int, progress: bool, *,
                     address: str | None = None, actors: int | None = None) -> None:
    """The :data:`~activevlm.pool.embed.ShardEmbedder` of :func:`embed_dataset_ray`: the
    ``pending`` shards embedded by Ray actors (arguments as there)."""
    ray = connect(address, progress=False)
    gpus = 1 if torch.device(vlm.device).type == "cuda" else 0
    cpus = 1 + num_workers
    work = _EmbedWork(dataset, vlm, out.resolve(), plan, shard_size, batch_size, num_workers)
    n_actors = actors or actor_count(ray, num_cpus=cpus, num_gpus=gpus)

    def rows_in(k: int) -> int:
        return min((k + 1) * shard_size, len(plan)) - k * shard_size

    columns = [TextColumn("[bold]embedding on Ray[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("images"), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("embed", total=sum(rows_in(k) for k in pending))
        for done in actor_map(ray, [{"shard": k} for k in pending], _ShardEmbedder, work,
                              actors=n_actors, num_cpus=cpus, num_gpus=gpus):
            bar.advance(task, sum(rows_in(int(k)) for k in done["shard"]))
