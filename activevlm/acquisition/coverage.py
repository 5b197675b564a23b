"""Cold start by coverage of the image embeddings: TypiClust and ProbCover (MATH.md §6).

With few labels (tens), representative points beat uncertain ones (Hacohen et al., ICML 2022):

- **TypiClust**: k-means with ``|labelled| + budget`` clusters over the unit embeddings;
  clusters are visited without a labelled point first, largest first (then by fewest labelled
  points, cyclically), and each visit takes the cluster's most *typical* unlabelled point,
  ``typicality(x) = 1 / mean ‖x − x_j‖`` over its ``k`` (= 20) nearest neighbours among the
  cluster's unlabelled, unpicked points. Clusters of at most ``min_cluster_size`` points are
  skipped (the authors' code), unless no other cluster exists.
- **ProbCover** (Yehuda et al., NeurIPS 2022): the δ-ball graph (``y ∈ B(x)`` iff
  ``‖x − y‖ < δ``, i.e. cosine > 1 − δ²/2 for unit vectors; one FAISS range search), points
  covered by labelled items removed, then greedy max coverage: take the point whose ball holds
  the most uncovered points, mark them covered, repeat; when everything is covered the rest is
  uniform at random (seeded). δ: given, or the label-free purity rule with k-means
  pseudo-labels (:func:`probcover_delta`).

Both run on exact :class:`~activevlm.index.EmbeddingIndex` searches (FAISS). Costs: k-means
``O(N·k·D)`` per iteration; ProbCover's graph ``O(N²·D)`` with the exact index (pass a
candidate subset for large pools) and memory linear in the number of edges, which δ keeps
small (purity 0.95 means small balls).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from activevlm.index.embedding_index import EmbeddingIndex
from activevlm.index.exclusion import Exclude, exclusion_mask

MAX_KMEANS_FULL = 50  # more clusters: MiniBatchKMeans (as the TypiClust authors do)


def unit_rows(embeddings) -> np.ndarray:
    """``[N, D]`` float32 rows scaled to unit norm."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"embeddings has {int((norms == 0).sum())} all-zero rows")
    return x / norms


def build_index(x: np.ndarray) -> EmbeddingIndex:
    """An exact (flat) CPU index over the unit rows ``x``."""
    return EmbeddingIndex.build(x, ivf_threshold=len(x) + 1, use_gpu=False, progress=False)


def kmeans_labels(embeddings, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """k-means cluster of each unit-normalised row: ``[N]`` int64 (KMeans up to
    ``MAX_KMEANS_FULL`` clusters, MiniBatchKMeans beyond; seeded)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = unit_rows(embeddings)
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must lie in [1, {len(x)}], got {n_clusters}")
    if n_clusters <= MAX_KMEANS_FULL:
        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=n_clusters, n_init=1, random_state=seed,
                             batch_size=max(1024, 5 * n_clusters))
    return km.fit_predict(x).astype(np.int64)


def typicality(x: np.ndarray, k: int = 20) -> np.ndarray:
    """``1 / mean Euclidean distance`` to each row's ``min(k, n − 1)`` nearest other rows of
    the unit rows ``x [n, D]``: ``[n]`` (inf for a single row or zero distances)."""
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.full(n, np.inf)
    sims, ids = build_index(x).search(x, k + 1)
    not_self = ids != np.arange(n)[:, None]
    first_k = np.argsort(~not_self, axis=1, kind="stable")[:, :k]  # drop self (or the last)
    cos = np.take_along_axis(sims, first_k, axis=1).astype(np.float64)
    dist = np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)).mean(1)
    with np.errstate(divide="ignore"):
        return 1.0 / dist


def cluster_visit_order(labels: np.ndarray, labelled: np.ndarray,
                        min_cluster_size: int) -> np.ndarray:
    """Cluster ids by (fewest labelled points, largest, lowest id), small clusters dropped
    unless nothing else is left."""
    sizes = np.bincount(labels)
    existing = np.bincount(labels[labelled], minlength=len(sizes))
    ids = np.flatnonzero(sizes > 0)
    big = ids[sizes[ids] > min_cluster_size]
    ids = big if len(big) else ids
    return ids[np.lexsort((ids, -sizes[ids], existing[ids]))]


def _unlabelled_budget(embeddings, labelled: Exclude, budget: int):
    """``(unit rows [N, D], labelled mask [N], budget capped at the unlabelled count)``."""
    x = unit_rows(embeddings)
    lab = exclusion_mask(len(x), labelled)
    return x, lab, min(budget, int((~lab).sum()))


def typiclust(
    embeddings,
    budget: int,
    *,
    labelled: Exclude = None,
    clusters=None,
    k_neighbours: int = 20,
    min_cluster_size: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """TypiClust picks: ``[<= budget]`` int64 rows in pick order (see the module docstring).

    ``embeddings [N, D]`` (normalised here); ``labelled``: mask ``[N]`` or row ids of labelled
    (or already queued) rows, never picked and counted in their clusters; ``clusters [N]``:
    precomputed cluster ids (default: :func:`kmeans_labels` with ``|labelled| + budget``
    clusters and ``seed``). Fewer rows only when the unlabelled rows run out.
    """
    x, lab, budget = _unlabelled_budget(embeddings, labelled, budget)
    n = len(x)
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    if clusters is None:
        clusters = kmeans_labels(x, min(n, int(lab.sum()) + budget), seed=seed)
    labels = np.asarray(clusters, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError(f"clusters must have shape [{n}], got {list(labels.shape)}")
    order = cluster_visit_order(labels, lab, min_cluster_size)
    available = ~lab
    picks: list[int] = []
    visit = 0
    while len(picks) < budget:
        if not available[np.isin(labels, order)].any():  # skipped small clusters remain
            order = cluster_visit_order(labels, lab, 0)
        members = np.flatnonzero((labels == order[visit % len(order)]) & available)
        visit += 1
        if len(members) == 0:
            continue
        best = int(members[np.argmax(typicality(x[members], k_neighbours))])
        picks.append(best)
        available[best] = False
    return np.asarray(picks, dtype=np.int64)


def typical_representatives(
    embeddings,
    *,
    n_clusters: int | None = None,
    clusters=None,
    labelled: Exclude = None,
    k_neighbours: int = 20,
    min_cluster_size: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """The most typical row of every cluster that holds no labelled row and more than
    ``min_cluster_size`` rows, largest cluster first: ``[<= n_clusters]`` int64 rows
    (TypiClust's first visit of each such cluster). ``clusters [N]``: cluster ids, or None
    for k-means with ``n_clusters`` clusters and ``seed``."""
    x = unit_rows(embeddings)
    lab = exclusion_mask(len(x), labelled)
    if clusters is None and n_clusters is None:
        raise ValueError("typical_representatives needs clusters or n_clusters")
    labels = (kmeans_labels(x, n_clusters, seed=seed) if clusters is None
              else np.asarray(clusters, dtype=np.int64))
    sizes = np.bincount(labels)
    order = cluster_visit_order(labels, lab, 0)
    has_labelled = np.bincount(labels[lab], minlength=len(sizes)) > 0
    reps = []
    for c in order[~has_labelled[order] & (sizes[order] > min_cluster_size)]:
        members = np.flatnonzero(labels == c)
        reps.append(int(members[np.argmax(typicality(x[members], k_neighbours))]))
    return np.asarray(reps, dtype=np.int64)


def ball_graph(x: np.ndarray, delta: float) -> sp.csr_matrix:
    """Adjacency ``[N, N]`` (bool CSR) of ``y ∈ B(x)`` iff ``‖x − y‖ < delta`` for unit rows."""
    if not 0 < delta <= 2:
        raise ValueError(f"delta must lie in (0, 2] for unit embeddings, got {delta}")
    found = build_index(x).range_search(x, 1.0 - delta**2 / 2.0)
    indptr = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in found])])
    indices = np.concatenate([ids for ids, _ in found])
    data = np.ones(len(indices), dtype=bool)
    return sp.csr_matrix((data, indices, indptr), shape=(len(x), len(x)))


def probcover_delta(
    embeddings, n_classes: int, *, alpha: float = 0.95, seed: int = 0
) -> float:
    """The largest δ whose balls are ``alpha``-pure under k-means pseudo-labels (ProbCover).

    A ball ``B(x) = {y : ‖x − y‖ < δ}`` is pure when all its points share x's pseudo-label,
    i.e. when ``δ <= d_other(x)``, the distance from x to the nearest point of another
    pseudo-label. Purity(δ) = fraction of pure balls is non-increasing in δ, so the largest δ
    with purity >= alpha is an order statistic of ``d_other``: exact, no grid needed.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    x = unit_rows(embeddings)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 for the purity rule, got {n_classes}")
    pseudo = kmeans_labels(x, n_classes, seed=seed)
    index = build_index(x)
    d_other = np.empty(len(x))
    for c in np.unique(pseudo):
        rows = np.flatnonzero(pseudo == c)
        sims, _ = index.search(x[rows], 1, exclude=pseudo == c)
        d_other[rows] = np.sqrt(np.clip(2.0 - 2.0 * sims[:, 0].astype(np.float64), 0, None))
    need = math.ceil(alpha * len(x))
    return float(np.sort(d_other)[len(x) - need])


def probcover(
    embeddings,
    budget: int,
    *,
    labelled: Exclude = None,
    delta: float | None = None,
    n_classes: int | None = None,
    alpha: float = 0.95,
    seed: int = 0,
) -> np.ndarray:
    """ProbCover picks: ``[<= budget]`` int64 rows in pick order (see the module docstring).

    ``delta``: ball radius (Euclidean, unit embeddings); None -> :func:`probcover_delta` with
    ``n_classes`` pseudo-classes and ``alpha``. ``labelled``: mask or row ids; their balls are
    covered before the first pick and they are never picked. Ties go to the lowest row.
    """
    x, lab, budget = _unlabelled_budget(embeddings, labelled, budget)
    n = len(x)
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    if delta is None:
        if n_classes is None:
            raise ValueError("probcover needs delta or n_classes (for the purity rule)")
        delta = probcover_delta(x, n_classes, alpha=alpha, seed=seed)
    adj = ball_graph(x, delta)
    covers = adj.T.tocsr()  # row y: the points whose balls contain y
    covered = np.zeros(n, dtype=bool)
    covered[adj[np.flatnonzero(lab)].indices] = True
    degree = np.asarray(adj[:, np.flatnonzero(~covered)].sum(1)).ravel().astype(np.int64)
    blocked = lab.copy()
    picks: list[int] = []
    while len(picks) < budget:
        best = int(np.argmax(np.where(blocked, -1, degree)))
        if degree[best] <= 0 or blocked[best]:
            break
        picks.append(best)
        blocked[best] = True
        new = adj.indices[adj.indptr[best] : adj.indptr[best + 1]]
        new = new[~covered[new]]
        covered[new] = True
        degree -= np.bincount(covers[new].indices, minlength=n)
    rest = np.flatnonzero(~blocked)
    fill = np.random.default_rng(seed).permutation(rest)[: budget - len(picks)]
    return np.concatenate([np.asarray(picks, dtype=np.int64), fill.astype(np.int64)])
