"""Reading a pool directory: ``open_pool`` validates it and returns a ``Pool``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from activevlm.models.head import ModelFileError, ProjectionHead
from activevlm.pool import layout
from activevlm.pool.layout import PoolError
from activevlm.pool.rows import RowView
from activevlm.pool.sharded import ShardedArray
from activevlm.utils.io import read_json


@dataclass
class Pool:
    """Cached encoder outputs of one dataset under one model.

    ``items`` has one row per embedded image (row i <-> activation row i). Arrays:
    ``image_activations [N, d_img]``, ``image_residuals [N, D]`` (SigLIP) or None,
    ``caption_activations [N, d_txt]`` (captioned datasets) or None — memory-mapped
    ``ShardedArray`` s — and ``text_activations [C, d_txt]`` (class prompt ensembles).
    """

    path: Path
    manifest: dict
    items: pd.DataFrame
    failures: pd.DataFrame
    image_activations: ShardedArray
    image_residuals: ShardedArray | None
    caption_activations: ShardedArray | None
    text_activations: np.ndarray
    head: ProjectionHead

    @property
    def model_id(self) -> str:
        return self.manifest["model"]["model_id"]

    @property
    def family(self) -> str:
        return self.manifest["model"]["family"]

    @property
    def classnames(self) -> list[str]:
        return list(self.manifest["classnames"])

    @property
    def templates(self) -> list[str]:
        """Prompt format strings (one ``{}`` each) averaged into ``text_activations``."""
        return list(self.manifest["templates"]["prompts"])

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sample_id_checksum(self) -> str:
        """SHA-256 (16 hex) of the sample ids in row order: the same pool, moved or copied,
        has the same checksum (how a run is re-pointed to it)."""
        text = "\n".join(self.items["sample_id"].astype(str))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (f"Pool({str(self.path)!r}, model_id={self.model_id!r}, items={len(self)}, "
                f"classes={len(self.classnames)}, failures={len(self.failures)})")

    def indices(
        self,
        domain: str | Sequence[str] | None = None,
        split: str | Sequence[str] | None = None,
        labelled: bool | None = None,
    ) -> np.ndarray:
        """Row indices (int64, ascending) of items matching all the given filters."""
        keep = np.ones(len(self.items), dtype=bool)
        for col, want in (("domain", domain), ("split", split)):
            if want is not None:
                values = [want] if isinstance(want, str) else list(want)
                keep &= self.items[col].isin(values).to_numpy()
        if labelled is not None:
            known = self.items["label"].to_numpy() >= 0
            keep &= known if labelled else ~known
        return np.flatnonzero(keep)

    def rows(self, idx, lazy: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``(activations [n, d_img], residuals [n, D] | None)`` of rows ``idx`` (int array,
        in the given order): float32 arrays in memory, or with ``lazy=True`` two
        :class:`RowView` s that read a slice of the rows when indexed."""
        rows = np.asarray(idx, dtype=np.int64)
        act, res = RowView(self.image_activations, rows), None
        if self.image_residuals is not None:
            res = RowView(self.image_residuals, rows)
        if lazy:
            return act, res
        return act[:], None if res is None else res[:]

    def image_embeddings(self, idx=None, head: ProjectionHead | None = None,
                         chunk_size: int = 8192) -> torch.Tensor:
        """Unnormalised image embeddings ``[n, D]`` (float32, CPU) of rows ``idx`` (int or bool
        array; default all) under ``head`` (default: the stored one, e.g. a fine-tuned head
        otherwise), read ``chunk_size`` rows at a time."""
        head = self.head if head is None else head
        rows = np.arange(len(self.items)) if idx is None else np.asarray(idx)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        out = []
        for i in range(0, len(rows), chunk_size):
            act, res = self.rows(rows[i:i + chunk_size])
            out.append(head.image_embeddings(torch.from_numpy(act),
                                             None if res is None else torch.from_numpy(res)))
        return torch.cat(out) if out else torch.empty(0, head.embed_dim)

    @property
    def class_subset(self) -> list[int] | None:
        """Class ids the dataset can contain (ImageNet-R/A: 200 of the 1000), None for all."""
        desc = self.manifest.get("dataset", {}).get("description") or {}
        subset = desc.get("class_subset")
        return None if subset is None else sorted(int(c) for c in subset)

    def text_embeddings(self) -> torch.Tensor:
        """Unnormalised class text embeddings ``[C, D]`` (float32, CPU)."""
        return self.head.text_embeddings(torch.from_numpy(self.text_activations))

    def caption_embeddings(self, idx=None) -> torch.Tensor:
        """Unnormalised caption embeddings ``[n, D]``; raises if the pool has no captions."""
        if self.caption_activations is None:
            raise PoolError(f"pool {self.path} has no caption activations (dataset had no "
                            "'caption' column)")
        rows = slice(None) if idx is None else idx
        return self.head.text_embeddings(torch.from_numpy(self.caption_activations[rows]))


def read_manifest(path: Path) -> dict:
    """Parse ``manifest.json`` of a pool directory and check its format version."""
    file = path / layout.MANIFEST
    if not path.is_dir():
        raise PoolError(f"pool directory not found: {path}")
    if not file.exists():
        raise PoolError(f"{file} is missing: {path} is not a pool directory")
    try:
        manifest = read_json(file)
    except ValueError as e:
        raise PoolError(str(e)) from e
    if not isinstance(manifest, dict) or manifest.get("format") != layout.FORMAT:
        raise PoolError(f"{file}: field 'format' must be {layout.FORMAT!r}")
    version = manifest.get("format_version")
    if version != layout.FORMAT_VERSION:
        raise PoolError(f"{file}: field 'format_version' is {version!r}, this activevlm "
                        f"reads version {layout.FORMAT_VERSION}")
    return manifest


def _field(manifest: dict, file: Path, *keys: str):
    obj = manifest
    for i, k in enumerate(keys):
        if not isinstance(obj, dict) or k not in obj:
            raise PoolError(f"{file}: field {'.'.join(keys[: i + 1])!r} is missing")
        obj = obj[k]
    return obj


def open_pool(path: str | Path, model_id: str | None = None, *,
              check_finite: bool = True) -> Pool:
    """Open and validate a complete pool directory written by ``embed_dataset``.

    Checks the manifest (present, parseable, format version, status), that shard shapes
    match ``dims``, that row counts match ``counts`` and ``items.parquet``, and, when
    ``model_id`` is given, that the pool was embedded with that model. ``check_finite``
    reads every activation once (chunked) and refuses a pool with a NaN or inf value, naming
    the rows, so that nothing is ever scored or fitted on them.
    """
    path = Path(path).resolve()  # checks and reads see the same folder
    manifest = read_manifest(path)
    mfile = path / layout.MANIFEST
    status = _field(manifest, mfile, "status")
    if status != "complete":
        raise PoolError(f"{mfile}: field 'status' is {status!r}; the embedding run did not "
                        "finish — re-run the same embed command to resume it")
    stored_id = _field(manifest, mfile, "model", "model_id")
    if model_id is not None and stored_id != model_id:
        raise PoolError(f"{mfile}: pool was embedded with model_id {stored_id!r}, "
                        f"expected {model_id!r}")
    dims = {k: _field(manifest, mfile, "dims", k) for k in ("image_act", "text_act", "embed")}
    dims["residual"] = _field(manifest, mfile, "dims", "residual")
    for key, value in dims.items():
        if (value is not None or key != "residual") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PoolError(f"{mfile}: field 'dims.{key}' is {value!r:.60}, expected a whole "
                            "number > 0" + (" or null" if key == "residual" else ""))
    dtype = _field(manifest, mfile, "dtype")
    if dtype != layout.DTYPE:
        raise PoolError(f"{mfile}: field 'dtype' is {dtype!r}, expected {layout.DTYPE!r}")
    counts = _field(manifest, mfile, "counts")
    shards = _field(manifest, mfile, "shards")
    arrays = _field(manifest, mfile, "arrays")
    _check_shards(shards, mfile)
    if len(shards) != _field(manifest, mfile, "counts", "shards"):
        raise PoolError(f"{mfile}: field 'counts.shards' is {counts['shards']} but "
                        f"'shards' lists {len(shards)}")
    rows = sum(s["rows"] for s in shards)
    if rows != _field(manifest, mfile, "counts", "items"):
        raise PoolError(f"{mfile}: field 'counts.items' is {counts['items']} but the shards "
                        f"hold {rows} rows")

    items = _read_table(path / layout.ITEMS, counts["items"], "counts.items", mfile)
    missing = [c for c in layout.ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise PoolError(f"{path / layout.ITEMS} lacks the column(s) {missing}; a pool's item "
                        f"table has {layout.ITEM_COLUMNS}: the pool is damaged, embed it again")
    failures = _read_table(path / layout.FAILURES, _field(manifest, mfile, "counts", "failures"),
                           "counts.failures", mfile)

    def sharded(kind: str) -> ShardedArray | None:
        if kind not in arrays:
            return None
        dim = dims[layout.SHARD_ARRAYS[kind]]
        files = [layout.shard_file(path, kind, int(s["index"])) for s in shards]
        for f, s in zip(files, shards, strict=True):
            if not f.exists():
                raise PoolError(f"shard file missing: {f}")
            arr = _load_shard(f)
            if arr.ndim != 2 or arr.shape != (int(s["rows"]), dim):
                raise PoolError(f"{f}: shape {list(arr.shape)} does not match manifest "
                                f"(rows {s['rows']}, dims.{layout.SHARD_ARRAYS[kind]} = {dim})")
            if arr.dtype != np.dtype(dtype):
                raise PoolError(f"{f}: dtype {arr.dtype} does not match manifest dtype {dtype}")
        return ShardedArray(files, dim, np.float32)

    image_act = sharded("image_act")
    if image_act is None:
        raise PoolError(f"{mfile}: field 'arrays' does not list 'image_act'")
    residual = sharded("residual")
    if residual is not None and dims["residual"] is None:
        raise PoolError(f"{mfile}: residual shards present but field 'dims.residual' is null")

    captions = sharded("caption_act")
    if check_finite:
        for kind, arr in (("image_act", image_act), ("residual", residual),
                          ("caption_act", captions)):
            if arr is not None:
                _check_finite(arr, kind, items, path)

    text_file = path / layout.TEXT_ACT
    if not text_file.exists():
        raise PoolError(f"class text activations missing: {text_file}")
    try:
        text_act = np.load(text_file).astype(np.float32, copy=False)
    except (OSError, ValueError, EOFError) as e:
        raise PoolError(f"{text_file} is not a readable .npy file (damaged or truncated); "
                        "embed the pool again") from e
    if not np.isfinite(text_act).all():
        raise PoolError(f"{text_file}: the class text activations contain NaN or inf")
    n_classes = len(_field(manifest, mfile, "classnames"))
    if text_act.shape != (n_classes, dims["text_act"]):
        raise PoolError(f"{text_file}: shape {list(text_act.shape)} does not match manifest "
                        f"({n_classes} classnames, dims.text_act = {dims['text_act']})")

    try:
        head = ProjectionHead.load(path / layout.HEAD)
    except (FileNotFoundError, ModelFileError) as e:
        raise PoolError(str(e)) from e
    got = {"image_act": head.image_dim, "text_act": head.text_dim, "embed": head.embed_dim}
    for k, v in got.items():
        if dims[k] != v:
            raise PoolError(f"{mfile}: field 'dims.{k}' is {dims[k]} but {path / 'head'}"
                            f".safetensors has {v}")

    return Pool(path, manifest, items, failures, image_act, residual, captions,
                text_act, head)


def _load_shard(file: Path) -> np.ndarray:
    try:
        return np.load(file, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:  # truncated or not an .npy file
        raise PoolError(f"{file} is not a readable .npy shard (damaged or truncated): "
                        "delete the shard and its shards/shard-NNNNN.json marker, then re-run "
                        "the same `activevlm embed` command to redo it") from e


def _check_finite(arr: ShardedArray, kind: str, items: pd.DataFrame, path: Path,
                  chunk_rows: int = 65536) -> None:
    bad = [rows.start + np.flatnonzero(~np.isfinite(values).all(axis=1))
           for rows, values in arr.chunks(chunk_rows)]
    bad = np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
    if len(bad):
        ids = items["sample_id"].to_numpy()[bad[:5]].tolist()
        raise PoolError(f"pool {path}: {len(bad)} row(s) of the {kind} shards contain NaN or "
                        f"inf (rows {bad[:5].tolist()}, sample ids {ids}); such activations "
                        "cannot be scored or fitted: re-embed those images (fp32 precision) "
                        "or remove them from the dataset")


def _check_shards(shards, mfile: Path) -> None:
    """``shards`` is a list of ``{"index": int >= 0, "rows": int >= 0}``; else a
    :class:`PoolError` naming the entry, the field and the value."""
    if not isinstance(shards, list):
        raise PoolError(f"{mfile}: field 'shards' is {shards!r:.60}, expected a list")
    for i, s in enumerate(shards):
        for key in ("index", "rows"):
            value = s.get(key) if isinstance(s, dict) else None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PoolError(f"{mfile}: field 'shards[{i}].{key}' is {value!r:.60}, "
                                "expected a whole number >= 0")


def _read_table(file: Path, expected: int, field: str, mfile: Path) -> pd.DataFrame:
    if not file.exists():
        raise PoolError(f"table missing: {file}")
    try:
        df = pd.read_parquet(file)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise PoolError(f"{file} is not a readable Parquet table (damaged or truncated); "
                        "embed the pool again") from e
    if len(df) != expected:
        raise PoolError(f"{file} has {len(df)} rows but {mfile} field {field!r} says {expected}")
    return df
