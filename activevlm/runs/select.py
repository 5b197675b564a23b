"""One selection round: candidates → strategy → write the labelling queue.

The library behind ``activevlm select``; a notebook calls :func:`select_round` directly.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from activevlm.acquisition import (
    PhasedStrategy,
    SelectionProblem,
    Strategy,
    make_strategy,
    map_probs,
    ray_scorer,
    score_pool,
)
from activevlm.index import (
    BlockFiller,
    EmbeddingIndex,
    StaleIndexError,
    StreamedNeighbours,
    fill_blocks,
    ray_filler,
)
from activevlm.models.head import ProjectionHead, head_fingerprint
from activevlm.pool.embeddings import image_embedding_shards
from activevlm.runs.config import SelectConfig
from activevlm.runs.lock import writes_run
from activevlm.runs.queue import LabelStudioOptions, default_document_root, write_queue
from activevlm.runs.state import RunState
from activevlm.utils.io import atomic_write_parquet, staged_dir

NEARLY_UNTARGETED = 0.5
"""A neighbourhood above this share of the candidates makes targeted selection nearly
untargeted (``select`` warns)."""


@dataclass
class SelectionResult:
    """``queue`` (the written table), ``round`` index, written ``paths`` by kind, the
    resolved ``strategy``, the ``phase`` of a regime-aware strategy (else None), the number
    of ``candidates`` and, when targeted, the ``neighbourhood`` size it chose among."""

    queue: pd.DataFrame
    round: int
    paths: dict[str, Path]
    strategy: Strategy | PhasedStrategy
    phase: str | None = None
    candidates: int = 0
    neighbourhood: int | None = None

    @property
    def nearly_untargeted(self) -> bool:
        """Whether the neighbourhood holds most of the candidates (targeting does little)."""
        return (self.neighbourhood is not None
                and self.neighbourhood > NEARLY_UNTARGETED * self.candidates)


def pool_index(pool, head: ProjectionHead, folder: str | Path, progress: bool = True,
               fill: BlockFiller = fill_blocks) -> EmbeddingIndex:
    """The FAISS index of the pool's image embeddings under ``head``, cached in ``folder``
    (a run's ``index/``; rebuilt when the pool or the head differ). IVF (large pools) is
    built in bounded memory with its inverted lists on disk, its blocks filled by ``fill``
    (:class:`~activevlm.index.EmbeddingIndex` ``build``)."""
    kind = f"image:{head_fingerprint(head)}"
    ids = pool.items["sample_id"].tolist()
    try:
        return EmbeddingIndex.load(folder, model_id=pool.model_id, ids=ids, embedding_kind=kind)
    except (FileNotFoundError, StaleIndexError):
        pass
    emb = image_embedding_shards(pool, head, folder=Path(folder) / "embeddings",
                                 progress=progress)  # memory-mapped: N x D never in RAM
    (Path(folder) / "index.json").unlink(missing_ok=True)  # written last by save()
    index = EmbeddingIndex.build(emb, ids=ids, model_id=pool.model_id, embedding_kind=kind,
                                 progress=progress, on_disk=folder, fill=fill)
    index.save(folder)
    return index


def pool_neighbours(pool, head: ProjectionHead, folder: str | Path,
                    progress: bool = True) -> StreamedNeighbours:
    """Exact k-NN over the pool's image embeddings under ``head``, streamed from the shards
    in ``folder/embeddings`` (written on first use, shared with :func:`pool_index`): what
    targeted selection searches; memory independent of the pool size, no index to build."""
    emb = image_embedding_shards(pool, head, folder=Path(folder) / "embeddings",
                                 progress=progress)
    return StreamedNeighbours.from_sharded(emb)


def target_points(target_pool, config: SelectConfig, rng: np.random.Generator,
                  exclude: set[str]) -> np.ndarray:
    """The unlabelled rows of ``target_pool`` in the target domain/split, in a seeded random
    order (the order targeted selection takes their neighbours in)."""
    rows = target_pool.indices(domain=config.target_domain, split=config.target_split)
    ids = target_pool.items["sample_id"].to_numpy()
    rows = rows[~np.isin(ids[rows], list(exclude))]
    if len(rows) == 0:
        raise ValueError(f"pool {target_pool.path}: no unlabelled items with domain="
                         f"{config.target_domain!r}, split={config.target_split!r}; domains: "
                         f"{sorted(target_pool.items['domain'].dropna().unique().tolist())}")
    return rng.permutation(rows)


@writes_run("state")  # one writer per run; reloads the state once the lock is held
def select_round(pool, state: RunState, config: SelectConfig, *, posterior=None,
                 head: ProjectionHead | None = None, target_pool=None,
                 failure_prob: np.ndarray | None = None,
                 labelstudio: LabelStudioOptions = LabelStudioOptions(),
                 progress: bool = True) -> SelectionResult:
    """Choose up to ``config.budget`` unqueued, unlabelled items and write the round's queue.

    The target set is ``config.target_domain``/``target_split`` of ``target_pool`` (default:
    the pool itself); without a target domain or pool, selection is untargeted and EPIG's
    target distribution is the pool's ``target_split`` in every domain. ``head`` defaults to
    the posterior's (fine-tuned) head, else the pool's.
    ``failure_prob [N]`` (pool rows) feeds the ViLU strategies. ``labelstudio``: image
    root and pre-annotations of the Label Studio tasks (``runs.queue``). Writes
    ``round_NNN/{queue.parquet,queue.csv,queue.labelstudio.json,labelstudio_config.xml,
    scores.parquet}`` (staged, then moved in) and then ``state.json``; a failed write leaves
    the run as it was, an interrupted round leaves the state untouched and the same seed
    reproduces it.
    """
    start = time.perf_counter()
    has_target = (target_pool is not None and target_pool is not pool) or \
        config.target_domain is not None
    strategy = make_strategy(config.strategy, has_target=has_target, targeted=config.targeted,
                             batch=config.batch, neighbourhood=config.neighbourhood)
    target_pool = pool if target_pool is None else target_pool
    if target_pool is not pool and target_pool.model_id != pool.model_id:
        raise ValueError(f"target pool {target_pool.path} is for model {target_pool.model_id!r}"
                         f", the pool {pool.path} for {pool.model_id!r}")
    head = head or (posterior.head if posterior is not None else pool.head)
    round_index = state.round
    rng = np.random.default_rng([config.seed, round_index])
    round_seed = int(rng.integers(2**31))

    # candidates: the unlabelled, unqueued, unskipped items of the pool split
    excluded = state.excluded()
    ids = pool.items["sample_id"].to_numpy()
    done = np.isin(ids, list(excluded))
    candidates = pool.indices(split=config.pool_split)
    candidates = candidates[~done[candidates]]
    if len(candidates) == 0:
        raise ValueError(f"pool {pool.path}: no unlabelled, unqueued items left in split "
                         f"{config.pool_split!r}")
    points = target_points(target_pool, config, rng, excluded) \
        if has_target or strategy.needs_target else None
    problem = SelectionProblem(
        pool, candidates, head, posterior=posterior, target_pool=target_pool,
        target_rows=None if points is None else np.sort(points[:config.n_targets]),
        target_points=points,
        failure_prob=failure_prob,
        index=lambda: pool_index(pool, head, state.dir.index, progress,
                                 ray_filler(config.ray_address) if config.uses_ray
                                 else fill_blocks),
        neighbours=lambda: pool_neighbours(pool, head, state.dir.index, progress),
        n_draws=config.n_draws, chunk_size=config.chunk_size,
        epig_top_classes=config.epig_top_classes, labelled=np.flatnonzero(done),
        device=config.device, progress=progress,
        scorer=ray_scorer(config.ray_address) if config.uses_ray and not strategy.targeted
        else score_pool)

    selection = strategy.select(problem, config.budget, round_seed)

    rows = selection.rows
    probs = map_probs(pool, head, rows)
    items = pool.items.iloc[rows]
    queue = pd.DataFrame({
        "rank": np.arange(len(rows)),
        "sample_id": items["sample_id"].to_numpy(),
        "path": items["path"].to_numpy(),
        "score": selection.scores.astype(float),
        "predicted_label": [pool.classnames[c] for c in probs.argmax(1)],
        "predicted_prob": probs.max(1).astype(float),
    })
    document_root = labelstudio.document_root or default_document_root(pool)
    folder = state.dir.round(round_index)
    new_folder = not folder.exists()  # the loop writes failure.json into it first
    with staged_dir(folder) as stage:  # a failed write leaves nothing in the run
        paths = write_queue(stage, queue, pool.classnames, document_root,
                            predictions=labelstudio.predictions)
        paths["scores"] = stage / state.dir.scores(round_index).name
        atomic_write_parquet(paths["scores"], pd.DataFrame(
            {"sample_id": ids[selection.scored_rows],
             "score": np.asarray(selection.scores_all, dtype=float)}))
    paths = {kind: folder / path.name for kind, path in paths.items()}
    queued, rounds = dict(state.queued), list(state.rounds)
    for sid in queue["sample_id"]:
        state.queued[sid] = round_index
    state.rounds.append({**asdict(config), "strategy": strategy.name,
                         "targeted": strategy.targeted, "selected": len(queue),
                         "phase": None if selection.phase is None else str(selection.phase),
                         "round_seed": round_seed,
                         "seconds": round(time.perf_counter() - start, 2),
                         "queue": str(paths["parquet"])})
    try:
        state.save()
    except Exception:  # the run stays as it was: no round, no queued items
        state.queued, state.rounds = queued, rounds
        if new_folder:
            shutil.rmtree(folder, ignore_errors=True)
        else:  # the loop's failure.json stays
            for path in paths.values():
                path.unlink(missing_ok=True)
        raise
    neighbourhood = (min(int(np.ceil(strategy.neighbourhood * config.budget)), len(candidates))
                     if strategy.targeted else None)
    return SelectionResult(queue, round_index, paths, strategy,
                           None if selection.phase is None else str(selection.phase),
                           len(candidates), neighbourhood)
