"""Turn scores into a batch: top-k, stochastic or diverse ranking, class balance, exclusions,
dedup.

Every strategy first produces a priority *order* over the candidates, then one greedy walk
takes items from it: excluded rows (already labelled or queued) never enter the order,
class balancing interleaves the order round-robin over predicted classes, and near-duplicate
removal skips any item whose cosine similarity to an already taken one exceeds a threshold
(a FAISS range query on the pool's :class:`~activevlm.index.EmbeddingIndex`).

Stochastic batch acquisition (Kirsch et al., TMLR 2023) samples without replacement with
probability ∝ score^β ("power") or ∝ exp(β·score) ("softmax") via the Gumbel-top-k trick:
sorting ``log w_i + G_i`` (``G_i`` iid Gumbel) gives a sample of the Plackett–Luce order.

Diverse batches (after Zhdanov 2019, "Diverse mini-batch active learning"): k-means with k
clusters over the embeddings of the best ``prefilter × k`` candidates; each cluster's
best-scoring member comes first, so a batch does not spend its labels on near-copies of one
informative image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from activevlm.index.exclusion import Exclude, exclusion_mask

if TYPE_CHECKING:  # faiss is an optional extra: selection without dedup must not need it
    from activevlm.index import EmbeddingIndex


def _check_scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be [N], got shape {list(s.shape)}")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN values")
    return s


def rank_topk(scores, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` (row ids) sorted by decreasing score; ties keep row order."""
    s = _check_scores(scores)
    return candidates[np.argsort(-s[candidates], kind="stable")]


def rank_stochastic(
    scores,
    candidates: np.ndarray,
    *,
    seed: int,
    beta: float = 1.0,
    mode: Literal["power", "softmax"] = "power",
) -> np.ndarray:
    """A random order of ``candidates``: item i comes next with probability ∝ w_i among those
    left, ``w = score^β`` (power; scores must be >= 0) or ``exp(β·score)`` (softmax).

    Zero-weight items (power mode) come after all others, in uniformly random order.
    """
    s = _check_scores(scores)[candidates]
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if mode == "power":
        if (s < 0).any():
            raise ValueError(
                f"power-mode stochastic selection needs scores >= 0, min is {s.min():.4g}; "
                "use mode='softmax' for signed scores"
            )
        with np.errstate(divide="ignore"):
            logw = beta * np.log(s) if beta > 0 else np.zeros_like(s)
    elif mode == "softmax":
        logw = beta * s
    else:
        raise ValueError(f"mode must be 'power' or 'softmax', got {mode!r}")
    gumbel = np.random.default_rng(seed).gumbel(size=len(candidates))
    keys = logw + gumbel  # -inf for zero weights
    # primary key: -keys (ascending); zero-weight ties broken by their Gumbel noise
    return candidates[np.lexsort((-gumbel, -keys))]


def rank_diverse(
    scores,
    candidates: np.ndarray,
    k: int,
    index: EmbeddingIndex,
    *,
    seed: int,
    prefilter: float = 4.0,
) -> np.ndarray:
    """``candidates`` ordered so that the first ``k`` are the best-scoring member of each of
    k k-means clusters of the best ``⌈prefilter·k⌉`` candidates (by decreasing score), then the
    rest by score. ``index`` holds the rows' unit embeddings."""
    from sklearn.cluster import KMeans

    if prefilter < 1:
        raise ValueError(f"prefilter must be >= 1, got {prefilter}")
    s = _check_scores(scores)
    order = rank_topk(s, candidates)
    m = min(len(order), int(np.ceil(prefilter * k)))
    if k <= 1 or m <= k:
        return order
    short = order[:m]
    labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(index.vectors(short))
    _, first = np.unique(labels, return_index=True)  # short is sorted: first = best member
    lead = short[np.sort(first)]
    return np.concatenate([lead, order[~np.isin(order, lead)]])


def balance_by_class(order: np.ndarray, predicted_class) -> np.ndarray:
    """Interleave ``order`` round-robin over predicted classes.

    Round r takes the r-th best item of every class still holding items; classes are visited
    in the order of their best item. Any prefix of the result has class counts that differ
    by at most 1 among classes that are not exhausted.
    """
    cls = np.asarray(predicted_class)[order]
    _, first_pos, inv = np.unique(cls, return_index=True, return_inverse=True)
    class_priority = np.argsort(np.argsort(first_pos))
    counts = np.bincount(inv)
    starts = np.cumsum(counts) - counts
    by_class = np.argsort(inv, kind="stable")
    within = np.empty(len(order), dtype=np.int64)
    within[by_class] = np.arange(len(order)) - np.repeat(starts, counts)
    return order[np.lexsort((class_priority[inv], within))]


def take_without_duplicates(
    order: np.ndarray, k: int, index: EmbeddingIndex, min_similarity: float
) -> np.ndarray:
    """The first ``k`` items of ``order`` skipping any whose cosine similarity to an item
    already taken is > ``min_similarity`` (``index`` holds the pool rows as ids)."""
    taken: list[int] = []
    blocked = np.zeros(index.n, dtype=bool)
    block = max(4 * k, 256)
    for start in range(0, len(order), block):
        cand = order[start : start + block]
        neighbours = index.range_search(index.vectors(cand), min_similarity)
        for i, (ids, _) in zip(cand, neighbours, strict=True):
            if blocked[i]:
                continue
            taken.append(int(i))
            blocked[i] = True
            blocked[ids] = True
            if len(taken) == k:
                return np.asarray(taken, dtype=np.int64)
    return np.asarray(taken, dtype=np.int64)


def select_batch(
    scores,
    k: int,
    *,
    strategy: Literal["topk", "stochastic", "diverse"] = "topk",
    seed: int | None = None,
    beta: float = 1.0,
    mode: Literal["power", "softmax"] = "power",
    exclude: Exclude = None,
    predicted_class=None,
    balance_within: int | None = None,
    index: EmbeddingIndex | None = None,
    min_similarity: float | None = None,
    prefilter: float = 4.0,
) -> np.ndarray:
    """Row ids ``[<=k]`` (int64, in selection order) to label next.

    ``scores [N]`` higher = better. ``exclude``: mask ``[N]`` or row ids never selected.
    ``predicted_class [N]``: balance the batch round-robin over predicted classes, among the
    best ``balance_within`` candidates only when given (the rest follow in score order).
    ``strategy="diverse"``: see :func:`rank_diverse` (needs ``index``, ``seed``, ``prefilter``).
    ``index`` + ``min_similarity``: drop near-duplicates (cosine > threshold) of taken items.
    Fewer than ``k`` ids come back only when the candidates run out.
    """
    s = _check_scores(scores)
    n = len(s)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if index is not None and index.n != n:
        raise ValueError(f"index holds {index.n} items but scores has {n}")
    candidates = np.flatnonzero(~exclusion_mask(n, exclude))
    if strategy == "topk":
        order = rank_topk(s, candidates)
    elif strategy == "stochastic":
        if seed is None:
            raise ValueError("stochastic selection needs an explicit seed")
        order = rank_stochastic(s, candidates, seed=seed, beta=beta, mode=mode)
    elif strategy == "diverse":
        if seed is None or index is None:
            raise ValueError("diverse selection needs an explicit seed and an embedding index")
        order = rank_diverse(s, candidates, k, index, seed=seed, prefilter=prefilter)
    else:
        raise ValueError(f"strategy must be 'topk', 'stochastic' or 'diverse', got {strategy!r}")
    if predicted_class is not None:
        if len(predicted_class) != n:
            raise ValueError(f"predicted_class has {len(predicted_class)} rows, scores {n}")
        m = len(order) if balance_within is None else balance_within
        if m < 1:
            raise ValueError(f"balance_within must be >= 1, got {balance_within}")
        order = np.concatenate([balance_by_class(order[:m], predicted_class), order[m:]])
    if min_similarity is None:
        return order[:k].astype(np.int64)
    if index is None:
        raise ValueError("near-duplicate removal (min_similarity) needs an index")
    return take_without_duplicates(order, k, index, min_similarity)
