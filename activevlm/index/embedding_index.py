"""A FAISS index over L2-normalised embeddings (inner product = cosine similarity).

Exact ``IndexFlatIP`` for pools below ``ivf_threshold`` items, ``IndexIVFFlat`` with
``nlist ≈ 4√N`` lists beyond it, trained on a sample and filled chunk by chunk; its ``nprobe``
is calibrated at build time until recall@10 against exact search reaches ``target_recall``
(0.95) on sampled pool rows, and the measured recall is stored with the index. Exclusions
over-fetch and filter (FAISS's ID-selector path is 10x slower on a flat index) and fall back
to the selector only when too much is excluded. Ids are pool row numbers ``0..N-1``; the
optional sample ids only feed a checksum that ties a saved index to its pool. A CPU index is
always kept (saving, range queries, reconstruction); a GPU copy serves k-NN searches when
faiss was built with GPU support and sees a GPU, otherwise everything runs on the CPU.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from rich.progress import Progress

from activevlm.index.exclusion import Exclude, exclusion_mask
from activevlm.index.ondisk import (
    READ_FLAGS,
    BlockFiller,
    _normalised,
    build_on_disk,
    fill_blocks,
)
from activevlm.utils.io import atomic_path, atomic_write_json, read_json

FORMAT = "activevlm-index"
FORMAT_VERSION = 1
DEFAULT_IVF_THRESHOLD = 1_000_000
GPU_MAX_K = 2048  # faiss GPU k-selection limit
CPU_OVERFETCH_MAX_K = 4096  # beyond this many neighbours the ID selector is cheaper
DEFAULT_TARGET_RECALL = 0.95
CALIBRATION_QUERIES = 256


class StaleIndexError(ValueError):
    """A saved index that does not belong to the pool or model it is loaded for."""


def gpu_available() -> bool:
    """faiss has GPU support compiled in and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def ids_checksum(ids: Sequence[str] | None, n: int) -> str:
    """sha256 of the newline-joined sample ids (of ``0..n-1`` when none are given)."""
    seq = range(n) if ids is None else ids
    h = hashlib.sha256()
    for s in seq:
        h.update(str(s).encode())
        h.update(b"\n")
    return h.hexdigest()


def default_nlist(n: int) -> int:
    """``4√N`` inverted lists, capped so every list gets >= 39 training points."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


class EmbeddingIndex:
    """k-NN and range queries over ``N`` pool embeddings ``[N, D]`` by cosine similarity."""

    def __init__(
        self,
        cpu_index: faiss.Index,
        *,
        kind: Literal["flat", "ivf"],
        nprobe: int,
        model_id: str | None,
        embedding_kind: str,
        checksum: str,
        use_gpu: bool | Literal["auto"] = "auto",
        recall: float | None = None,
        on_disk: bool = False,
    ):
        self._cpu = cpu_index
        self.on_disk = on_disk  # IVF lists in <name>.ivfdata, memory-mapped
        self.recall = recall  # measured recall@10 vs exact search (IVF); None when exact
        self.kind = kind
        self.nprobe = nprobe
        self.model_id = model_id
        self.embedding_kind = embedding_kind
        self.checksum = checksum
        if kind == "ivf":
            faiss.extract_index_ivf(cpu_index).nprobe = nprobe
        self._gpu = None
        if use_gpu == "auto":
            use_gpu = gpu_available()
        elif use_gpu and not gpu_available():
            raise ValueError("use_gpu=True but faiss has no GPU support or sees no GPU")
        if use_gpu:
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, cpu_index)

    @property
    def n(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    @classmethod
    def build(
        cls,
        embeddings,
        *,
        ids: Sequence[str] | None = None,
        model_id: str | None = None,
        embedding_kind: str = "image",
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nlist: int | None = None,
        nprobe: int | None = None,
        target_recall: float = DEFAULT_TARGET_RECALL,
        use_gpu: bool | Literal["auto"] = "auto",
        seed: int = 0,
        chunk_size: int = 65536,
        progress: bool = True,
        on_disk: str | Path | None = None,
        on_disk_name: str = "index",
        fill: BlockFiller = fill_blocks,
    ) -> EmbeddingIndex:
        """Index ``embeddings [N, D]`` (any array-like with row slicing, e.g. a memory-mapped
        ``ShardedArray``; read ``chunk_size`` rows at a time and normalised here).

        IVF when ``N >= ivf_threshold``: ``nlist`` defaults to :func:`default_nlist`; k-means
        runs on a seeded sample of ``64·nlist`` rows. Without ``nprobe``, it is the smallest
        power of two whose recall@10 on ``CALIBRATION_QUERIES`` sampled rows reaches
        ``target_recall`` (:func:`calibrate_nprobe`; one extra pass over the embeddings).
        With ``on_disk`` (a folder), an IVF index is built in bounded memory instead
        (:func:`activevlm.index.ondisk.build_on_disk`: k-means on ``32·nlist`` rows, 10
        iterations, filled per ``chunk_size`` rows, lists merged into
        ``<on_disk>/<on_disk_name>.ivfdata``); :meth:`save` it to the same folder and name.
        ``fill`` fills those blocks: in this process by default, as Ray tasks with
        :func:`activevlm.index.ray_build.ray_filler` (the same index).
        """
        n, d = embeddings.shape
        if n == 0:
            raise ValueError("cannot index an empty embedding array")
        if ids is not None and len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries but embeddings has {n} rows")
        rng = np.random.default_rng(seed)
        if n >= ivf_threshold and on_disk is not None:
            kind, nlist = "ivf", nlist or default_nlist(n)
            index = build_on_disk(embeddings, on_disk, on_disk_name, nlist=nlist,
                                  rows_per_block=chunk_size, seed=seed, fill=fill)
        elif n >= ivf_threshold:
            kind = "ivf"
            nlist = nlist or default_nlist(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
            index.cp.seed = seed
            index.train(_normalised(embeddings[sample]))
        else:
            kind, nprobe = "flat", 1
            index = faiss.IndexFlatIP(d)
        if index.ntotal == 0:  # not filled on disk
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"indexing ({kind})", total=n)
                for i in range(0, n, chunk_size):
                    chunk = _normalised(embeddings[i : i + chunk_size])
                    index.add(chunk)
                    bar.advance(task, len(chunk))
        recall = None
        if kind == "ivf":
            index.make_direct_map()
            queries = np.sort(rng.choice(n, size=min(n, CALIBRATION_QUERIES), replace=False))
            if nprobe is None:
                nprobe, recall = calibrate_nprobe(index, embeddings, queries, target_recall,
                                                  chunk_size=chunk_size)
            else:
                recall = ivf_recall(index, embeddings, queries, nprobe, chunk_size=chunk_size)
        return cls(index, kind=kind, nprobe=nprobe, model_id=model_id,
                   embedding_kind=embedding_kind, checksum=ids_checksum(ids, n), use_gpu=use_gpu,
                   recall=recall, on_disk=on_disk is not None and kind == "ivf")

    def _params(self, selector=None) -> faiss.SearchParameters:
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return faiss.SearchParameters(sel=selector)

    def search(self, queries, k: int, *, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar rows per query: ``(sims [Q, k] float32, ids [Q, k] int64)``.

        Excluded rows (mask ``[N]`` or row ids) are never returned. Rows with fewer than ``k``
        candidates are padded with id -1 and similarity -inf.
        """
        q = _normalised(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        excluded = exclusion_mask(self.n, exclude)
        if self._gpu is not None and k <= GPU_MAX_K:
            if not excluded.any():
                return _padded(*self._gpu.search(q, k))
            found = search_overfetch(self._gpu, q, k, excluded, max_k=GPU_MAX_K)
            if found is not None:
                return found
        if not excluded.any():
            return _padded(*self._cpu.search(q, k, params=self._params()))
        found = search_overfetch(self._cpu, q, k, excluded, max_k=CPU_OVERFETCH_MAX_K)
        if found is not None:
            return found
        bitmap = np.packbits(~excluded, bitorder="little")
        selector = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
        return _padded(*self._cpu.search(q, k, params=self._params(selector)))

    def range_search(self, queries, radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Rows with cosine similarity > ``radius`` to each query (inner-product "radius"):
        one ``(ids int64, sims float32)`` pair per query, most similar first."""
        q = _normalised(queries)
        lims, sims, ids = self._cpu.range_search(q, float(radius), params=self._params())
        out = []
        for r in range(len(q)):
            s, i = sims[lims[r] : lims[r + 1]], ids[lims[r] : lims[r + 1]]
            order = np.argsort(-s, kind="stable")
            out.append((i[order].astype(np.int64), s[order]))
        return out

    def vectors(self, ids) -> np.ndarray:
        """The stored (normalised) embeddings of rows ``ids``: ``[len(ids), D]``."""
        return self._cpu.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def metadata(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "n": self.n, "dim": self.dim,
            "kind": self.kind, "nprobe": self.nprobe, "model_id": self.model_id,
            "embedding_kind": self.embedding_kind, "ids_sha256": self.checksum,
            "recall_at_10": self.recall, "on_disk": self.on_disk,
        }

    def save(self, folder: str | Path, name: str = "index") -> Path:
        """Write ``<folder>/<name>.faiss`` (CPU index) then ``<name>.json``; returns the JSON.
        An on-disk index must be saved beside its ``<name>.ivfdata`` (same folder and name)."""
        folder = Path(folder)
        with atomic_path(folder / f"{name}.faiss") as tmp:
            faiss.write_index(self._cpu, str(tmp))
        meta_path = folder / f"{name}.json"
        atomic_write_json(meta_path, self.metadata())
        return meta_path

    @classmethod
    def load(
        cls,
        folder: str | Path,
        name: str = "index",
        *,
        n: int | None = None,
        model_id: str | None = None,
        ids: Sequence[str] | None = None,
        embedding_kind: str | None = None,
        use_gpu: bool | Literal["auto"] = "auto",
    ) -> EmbeddingIndex:
        """Read an index saved by :meth:`save`, refusing a stale one.

        Raises :class:`StaleIndexError` when ``n``, ``model_id``, ``embedding_kind`` or the
        checksum of ``ids`` (whichever are given) differ from what the index was built on.
        """
        folder = Path(folder)
        meta_path, index_path = folder / f"{name}.json", folder / f"{name}.faiss"
        for p in (meta_path, index_path):
            if not p.exists():
                raise FileNotFoundError(f"index file missing: {p}")
        meta = read_json(meta_path)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: not an activevlm index (format={meta.get('format')!r})")
        if ids is not None and n is None:
            n = len(ids)
        checks = {"n": n, "model_id": model_id, "embedding_kind": embedding_kind,
                  "ids_sha256": None if ids is None else ids_checksum(ids, len(ids))}
        for field, want in checks.items():
            if want is not None and meta.get(field) != want:
                raise StaleIndexError(
                    f"{meta_path}: stale index, {field} is {meta.get(field)!r} but the pool "
                    f"has {want!r}; rebuild it"
                )
        on_disk = bool(meta.get("on_disk"))
        index = faiss.read_index(str(index_path), READ_FLAGS if on_disk else 0)
        if index.ntotal != meta["n"] or index.d != meta["dim"]:
            raise StaleIndexError(
                f"{index_path}: holds {index.ntotal} x {index.d} vectors but {meta_path} says "
                f"{meta['n']} x {meta['dim']}"
            )
        return cls(index, kind=meta["kind"], nprobe=int(meta["nprobe"]),
                   model_id=meta["model_id"], embedding_kind=meta["embedding_kind"],
                   checksum=meta["ids_sha256"], use_gpu=use_gpu,
                   recall=meta.get("recall_at_10"), on_disk=on_disk)


def _padded(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = ids.astype(np.int64)
    sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
    return sims, ids


def search_overfetch(
    index: faiss.Index, q: np.ndarray, k: int, excluded: np.ndarray, *, max_k: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """k-NN with exclusions for indexes without ID selectors (GPU): fetch more neighbours
    than needed, drop excluded ones, double the fetch until every query has ``k`` or the
    index is exhausted. Returns None when that would need more than ``max_k`` neighbours."""
    n = index.ntotal
    fetch = min(n, 2 * k)
    while True:
        if fetch > max_k:
            return None
        sims, ids = index.search(q, fetch)
        keep = (ids >= 0) & ~excluded[np.clip(ids, 0, None)]
        enough = keep.sum(1) >= k
        if enough.all() or fetch >= n:
            break
        fetch = min(n, 2 * fetch)
    out_ids = np.full((len(q), k), -1, dtype=np.int64)
    out_sims = np.full((len(q), k), -np.inf, dtype=np.float32)
    for r in range(len(q)):
        i, s = ids[r][keep[r]][:k], sims[r][keep[r]][:k]
        out_ids[r, : len(i)], out_sims[r, : len(s)] = i, s
    return out_sims, out_ids


def exact_neighbours(embeddings, queries: np.ndarray, k: int, *,
                     chunk_size: int = 65536) -> np.ndarray:
    """Ids ``[Q, k]`` of the exact top-``k`` cosine neighbours of pool rows ``queries`` among
    all other rows, by brute force over ``embeddings`` in chunks (memory O(Q·(chunk + k)))."""
    n = embeddings.shape[0]
    q = _normalised(embeddings[queries])
    best_sims = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    for i in range(0, n, chunk_size):
        sims = q @ _normalised(embeddings[i : i + chunk_size]).T
        rows = np.arange(i, i + sims.shape[1])
        own = (queries[:, None] == rows[None, :])
        sims[own] = -np.inf  # a row is not its own neighbour
        all_sims = np.concatenate([best_sims, sims], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(rows, sims.shape)], axis=1)
        top = np.argpartition(-all_sims, min(k, all_sims.shape[1] - 1), axis=1)[:, :k]
        best_sims = np.take_along_axis(all_sims, top, 1)
        best_ids = np.take_along_axis(all_ids, top, 1)
    return best_ids


def ivf_recall(index: faiss.Index, embeddings, queries: np.ndarray, nprobe: int, *,
               k: int = 10, exact: np.ndarray | None = None, chunk_size: int = 65536) -> float:
    """Recall@k of ``index`` at ``nprobe`` for pool rows ``queries`` (self-matches ignored)."""
    if exact is None:
        exact = exact_neighbours(embeddings, queries, k, chunk_size=chunk_size)
    q = _normalised(embeddings[queries])
    _, found = index.search(q, k + 1, params=faiss.SearchParametersIVF(nprobe=nprobe))
    hits = [len(set(f[f != r][:k].tolist()) & set(e.tolist())) / k
            for f, e, r in zip(found, exact, queries, strict=True)]
    return float(np.mean(hits))


def calibrate_nprobe(index: faiss.Index, embeddings, queries: np.ndarray, target: float, *,
                     k: int = 10, chunk_size: int = 65536) -> tuple[int, float]:
    """The smallest ``nprobe`` in 1, 2, 4, ... (capped at nlist, where IVF is exact) whose
    recall@k on ``queries`` reaches ``target``; returns it with the recall measured."""
    exact = exact_neighbours(embeddings, queries, k, chunk_size=chunk_size)
    nlist = faiss.extract_index_ivf(index).nlist
    nprobe = 1
    while True:
        recall = ivf_recall(index, embeddings, queries, nprobe, k=k, exact=exact)
        if recall >= target or nprobe >= nlist:
            return nprobe, recall
        nprobe = min(nlist, 2 * nprobe)
