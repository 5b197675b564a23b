"""One selection round: score the unlabelled pool, pick a batch, write the labelling queue.

The library behind ``activevlm select``; a notebook calls :func:`select_round` directly.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from activevlm.acquisition import (
    Heuristic,
    JointDraws,
    epig_scores,
    get_heuristic,
    score_pool,
    select_batch,
)
from activevlm.index import EmbeddingIndex, StaleIndexError, knn_candidates, nearest_unique
from activevlm.models.head import ProjectionHead
from activevlm.runs.queue import write_queue
from activevlm.runs.state import RunState
from activevlm.utils.io import atomic_write_parquet
from activevlm.vilu.combine import failure_weighted

# Strategies a user names; each is a registered heuristic on MAP (K = 1) or posterior draws.
STRATEGIES = {
    "random": ("random", False),
    "entropy": ("entropy", False),  # MAP predictive entropy
    "bayes-entropy": ("entropy", True),  # entropy of the posterior predictive
    "margin": ("margin", False),
    "bald": ("bald", True),
    "epig": ("epig", True),
    "vilu": ("vilu", False),
    "vilu+epig": ("epig", True),  # EPIG weighted by ViLU failure probability (vilu.combine)
}
# Strategies that need failure probabilities ``[N]`` from a ViLU model.
FAILURE_STRATEGIES = ("vilu", "vilu+epig")


@dataclass
class SelectConfig:
    """How one round chooses ``budget`` items.

    ``target_domain``: the domain the model should adapt to; its ``target_split`` items are
    EPIG's target distribution and, when targeted, the points that are scored and mapped to
    their nearest unlabelled pool neighbours (BayesVLM's protocol). ``targeted``: None (auto)
    = targeted whenever a target is given, unless an untargeted option (``knn_prefilter``,
    the "diverse" batch, ``class_balanced``, ``dedup_similarity``) is asked for; targeting
    beat untargeted selection for EPIG on the demo world and on PACS (benchmarks/README.md).
    ``pool_split``: which items may be queued (None = all). ``batch``: "topk", "stochastic"
    (Kirsch et al. 2023, ``beta``/``mode``) or "diverse" (k-means over the image embeddings
    of the best ``prefilter × budget`` candidates, the best item per cluster; untargeted
    only). ``class_balanced``: walk the order round-robin over predicted classes, among the
    best ``balance_within × budget`` candidates only when that is set (untargeted only).
    ``dedup_similarity``: drop queued items whose cosine similarity to an already chosen one
    exceeds it. ``epig_top_classes``: EPIG over each input's top classes plus "other" (a
    lower bound, ``(C / (c + 1))²`` times cheaper).
    ``knn_prefilter=k``: score only pool items among the k nearest neighbours (FAISS) of some
    target point.
    """

    budget: int = 500
    strategy: str = "epig"
    target_domain: str | None = None
    target_split: str | None = "val"
    targeted: bool | None = None
    pool_split: str | None = "train"
    n_draws: int = 100
    n_targets: int = 256
    batch: str = "topk"
    beta: float = 1.0
    mode: str = "power"
    class_balanced: bool = False
    balance_within: float | None = None
    prefilter: float = 4.0
    dedup_similarity: float | None = None
    seed: int = 0
    chunk_size: int = 2048
    epig_top_classes: int | None = None
    knn_prefilter: int | None = None

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose from {sorted(STRATEGIES)}"
            )
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.n_draws < 1 or self.n_targets < 1:
            raise ValueError("n_draws and n_targets must be >= 1")
        if self.batch not in ("topk", "stochastic", "diverse"):
            raise ValueError(f"batch must be 'topk', 'stochastic' or 'diverse', got "
                             f"{self.batch!r}")
        if self.batch == "diverse" and self.targeted:
            raise ValueError("batch 'diverse' clusters pool candidates; targeted selection "
                             "already spreads the batch over the target points (use topk)")
        if self.prefilter < 1:
            raise ValueError(f"prefilter must be >= 1 (a multiple of the budget), got "
                             f"{self.prefilter}")
        if self.balance_within is not None and self.balance_within < 1:
            raise ValueError(f"balance_within must be >= 1 (a multiple of the budget), got "
                             f"{self.balance_within}")


@dataclass
class SelectionResult:
    queue: pd.DataFrame
    round: int
    paths: dict[str, Path]


def heuristic_of(strategy: str) -> str:
    """The registered heuristic behind a strategy name (``"vilu+epig"`` -> ``"epig"``)."""
    return STRATEGIES[strategy][0]


def head_fingerprint(head: ProjectionHead) -> str:
    """Short hash of the image projection: a FAISS index is valid only for the same head."""
    h = hashlib.sha256(head.image_weight.detach().cpu().numpy().tobytes())
    if head.image_bias is not None:
        h.update(head.image_bias.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def pool_index(pool, head: ProjectionHead, progress: bool = True) -> EmbeddingIndex:
    """The FAISS index of the pool's image embeddings under ``head``, cached in the pool dir."""
    kind = f"image:{head_fingerprint(head)}"
    ids = pool.items["sample_id"].tolist()
    folder = Path(pool.path) / "index"
    try:
        return EmbeddingIndex.load(folder, model_id=pool.model_id, ids=ids, embedding_kind=kind)
    except (FileNotFoundError, StaleIndexError):
        pass
    emb = pool.image_embeddings(head=head).numpy()
    index = EmbeddingIndex.build(emb, ids=ids, model_id=pool.model_id, embedding_kind=kind,
                                 progress=progress)
    index.save(folder)
    return index


class _Rows:
    """Row-sliceable view of selected pool rows (activations read chunk by chunk)."""

    def __init__(self, array, rows: np.ndarray):
        self.array, self.rows = array, rows
        self.shape = (len(rows), *array.shape[1:])

    def __getitem__(self, key):
        return self.array[self.rows[key]]


def _target_rows(target_pool, config: SelectConfig, rng: np.random.Generator,
                 exclude: set[str]) -> np.ndarray:
    """Up to ``n_targets`` unlabelled rows of ``target_pool`` in the target domain/split."""
    rows = target_pool.indices(domain=config.target_domain, split=config.target_split)
    ids = target_pool.items["sample_id"].to_numpy()
    rows = rows[~np.isin(ids[rows], list(exclude))]
    if len(rows) == 0:
        raise ValueError(f"pool {target_pool.path}: no unlabelled items with domain="
                         f"{config.target_domain!r}, split={config.target_split!r}; domains: "
                         f"{sorted(target_pool.items['domain'].dropna().unique().tolist())}")
    if len(rows) > config.n_targets:
        rows = np.sort(rng.choice(rows, size=config.n_targets, replace=False))
    return rows


def _residual(pool, rows):
    return None if pool.image_residuals is None else _Rows(pool.image_residuals, rows)


def score_rows(pool, rows: np.ndarray, config: SelectConfig, *, head: ProjectionHead,
               posterior=None, target: tuple | None = None,
               failure_prob: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """Scores ``[len(rows)]`` of pool ``rows`` under ``config.strategy`` (higher = first).

    ``target = (target_pool, target_rows)`` is EPIG's target set, scored under the same draws.
    """
    heuristic, needs_posterior = STRATEGIES[config.strategy]
    generator = torch.Generator().manual_seed(config.seed)
    if needs_posterior:
        if posterior is None:
            raise ValueError(f"strategy {config.strategy!r} needs a posterior")
        draws = JointDraws.from_posterior(posterior, pool.text_activations, config.n_draws,
                                          generator)
    else:
        draws = JointDraws.from_head(head, pool.text_activations)
    h = get_heuristic(heuristic)
    if h.name == "epig" and config.epig_top_classes is not None:
        h = Heuristic("epig", partial(epig_scores, top_classes=config.epig_top_classes),
                      h.requires)
    target_probs = None
    if "target_probs" in h.requires:
        if target is None:
            raise ValueError(f"strategy {config.strategy!r} needs a target set (--target)")
        tpool, trows = target
        target_probs = draws.probs_chunked(_Rows(tpool.image_activations, trows),
                                           _residual(tpool, trows))
    scores = score_pool(draws, _Rows(pool.image_activations, rows), h,
                        residual=_residual(pool, rows), target_probs=target_probs,
                        external_scores=failure_prob, generator=generator,
                        chunk_size=config.chunk_size, progress=progress)
    if config.strategy == "vilu+epig":
        scores = failure_weighted(scores, failure_prob)
    return scores


def select_round(pool, state: RunState, config: SelectConfig, *, posterior=None,
                 head: ProjectionHead | None = None, target_pool=None,
                 failure_prob: np.ndarray | None = None,
                 progress: bool = True) -> SelectionResult:
    """Choose up to ``config.budget`` unqueued, unlabelled items and write the round's queue.

    The target set is ``config.target_domain``/``target_split`` of ``target_pool`` (default:
    the pool itself); EPIG and ``targeted`` selection need one.
    ``head`` defaults to the posterior's (fine-tuned) head, else the pool's.
    ``failure_prob [N]`` (pool rows) feeds the ``vilu`` strategy. Writes
    ``round_NNN/{queue.parquet,queue.csv,queue.labelstudio.json,scores.parquet}`` and then
    ``state.json``; an interrupted round leaves the state untouched and the same seed
    reproduces it.
    """
    config.validate()
    has_target = (target_pool is not None and target_pool is not pool) or \
        config.target_domain is not None
    if config.targeted is None:
        untargeted_only = (config.knn_prefilter or config.batch == "diverse"
                           or config.class_balanced or config.dedup_similarity is not None)
        config = replace(config, targeted=has_target and not untargeted_only)
    if config.strategy in FAILURE_STRATEGIES and failure_prob is None:
        raise ValueError(f"strategy {config.strategy!r} needs failure probabilities from a "
                         "trained ViLU model")
    head = head or (posterior.head if posterior is not None else pool.head)
    start = time.perf_counter()
    round_index = state.round
    rng = np.random.default_rng([config.seed, round_index])
    round_config = SelectConfig(**{**asdict(config), "seed": int(rng.integers(2**31))})
    excluded = state.excluded()
    ids = pool.items["sample_id"].to_numpy()
    candidates = pool.indices(split=config.pool_split)
    candidates = candidates[~np.isin(ids[candidates], list(excluded))]
    if len(candidates) == 0:
        raise ValueError(f"pool {pool.path}: no unlabelled, unqueued items left in split "
                         f"{config.pool_split!r}")
    target_pool = pool if target_pool is None else target_pool
    if target_pool is not pool and target_pool.model_id != pool.model_id:
        raise ValueError(f"target pool {target_pool.path} is for model {target_pool.model_id!r}"
                         f", the pool {pool.path} for {pool.model_id!r}")
    if (heuristic_of(config.strategy) == "epig" or config.targeted) and not has_target:
        raise ValueError(f"strategy {config.strategy!r}{' (targeted)' if config.targeted else ''}"
                         " needs a target domain or target pool (--target)")
    target_rows = _target_rows(target_pool, config, rng, excluded) if has_target else None
    target = None if target_rows is None else (target_pool, target_rows)
    needs_index = (config.targeted or config.dedup_similarity or config.knn_prefilter
                   or config.batch == "diverse")
    index = pool_index(pool, head, progress) if needs_index else None
    excluded_rows = np.ones(len(ids), dtype=bool)
    excluded_rows[candidates] = False
    if config.knn_prefilter and not config.targeted:
        if target_rows is None:
            raise ValueError("knn_prefilter needs a target domain or target pool (--target)")
        target_emb = target_pool.image_embeddings(target_rows, head).numpy()
        candidates = knn_candidates(index, target_emb, config.knn_prefilter,
                                    exclude=excluded_rows)
        excluded_rows[:] = True
        excluded_rows[candidates] = False

    if config.targeted:
        # BayesVLM protocol: score the target points, map the best to nearest pool items.
        if failure_prob is not None and target_pool is not pool:
            raise ValueError("targeted ViLU selection needs the target set inside the pool")
        scored = target_rows
        scores = score_rows(target_pool, target_rows, round_config, head=head,
                            posterior=posterior, target=target, progress=progress,
                            failure_prob=None if failure_prob is None else failure_prob[scored])
        order = select_batch(scores, len(scores), strategy=round_config.batch,
                             seed=round_config.seed, beta=config.beta, mode=config.mode)
        target_emb = target_pool.image_embeddings(target_rows[order], head).numpy()
        chosen = nearest_unique(index, target_emb, config.budget, exclude=excluded_rows)
        row_score = dict(zip(target_rows[order], scores[order], strict=True))
        neighbour_of = np.resize(target_rows[order], len(chosen))  # round-robin mapping
        chosen_scores = np.array([row_score[t] for t in neighbour_of])
    else:
        scored = candidates
        scores = score_rows(pool, candidates, round_config, head=head, posterior=posterior,
                            target=target, progress=progress,
                            failure_prob=None if failure_prob is None else failure_prob[scored])
        full = np.full(len(ids), -np.inf)
        full[candidates] = scores
        predicted = None
        if config.class_balanced:
            predicted = _map_probs(pool, head, np.arange(len(ids))).argmax(1)
        chosen = select_batch(np.where(np.isfinite(full), full, 0.0), config.budget,
                              strategy=round_config.batch, seed=round_config.seed,
                              beta=config.beta, mode=config.mode, exclude=excluded_rows,
                              predicted_class=predicted,
                              balance_within=None if config.balance_within is None else
                              int(np.ceil(config.balance_within * config.budget)),
                              index=index, min_similarity=config.dedup_similarity,
                              prefilter=config.prefilter)
        chosen_scores = full[chosen]

    probs = _map_probs(pool, head, chosen)
    items = pool.items.iloc[chosen]
    queue = pd.DataFrame({
        "rank": np.arange(len(chosen)),
        "sample_id": items["sample_id"].to_numpy(),
        "path": items["path"].to_numpy(),
        "score": chosen_scores.astype(float),
        "predicted_label": [pool.classnames[c] for c in probs.argmax(1)],
        "predicted_prob": probs.max(1).astype(float),
    })
    folder = state.round_dir(round_index)
    paths = write_queue(folder, queue)
    paths["scores"] = folder / "scores.parquet"
    atomic_write_parquet(paths["scores"], pd.DataFrame(
        {"sample_id": ids[scored], "score": np.asarray(scores, dtype=float)}))
    for sid in queue["sample_id"]:
        state.queued[sid] = round_index
    state.rounds.append({**asdict(config), "selected": len(queue), "round_seed":
                         round_config.seed, "seconds": round(time.perf_counter() - start, 2),
                         "queue": str(paths["parquet"])})
    state.save()
    return SelectionResult(queue, round_index, paths)


def _map_probs(pool, head: ProjectionHead, rows: np.ndarray) -> np.ndarray:
    """Deterministic class probabilities ``[len(rows), C]`` of the current head."""
    g = pool.image_embeddings(rows, head)
    h = head.text_embeddings(torch.from_numpy(np.asarray(pool.text_activations)))
    return torch.softmax(head.logits(g, h), dim=-1).numpy()
