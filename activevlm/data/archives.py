"""Images stored inside archives, as img2dataset writes them: ``webdataset:`` and ``img2dataset:``.

- ``webdataset:PATH`` -- a folder of ``.tar`` shards (or one ``.tar``): each sample is the
  members sharing a key (the member name up to the first dot of its file name), e.g.
  ``000000017.jpg`` (image: jpg/jpeg/png/webp/bmp), ``000000017.txt`` (caption),
  ``000000017.cls`` (label: an integer or a class name) and ``000000017.json`` (metadata;
  its ``caption``, ``label``, ``domain`` and ``split`` fields are used when present).
- ``img2dataset:PATH`` -- a folder of ``.parquet`` shards (or one file) written with
  ``output_format="parquet"``: image bytes in the column ``jpg`` (or ``png``/``webp``/
  ``jpeg``), optional ``key``, ``txt`` (caption), ``label``/``cls``, ``domain``, ``split``,
  ``status``, ``error_message``.

Listing reads only the small members (tar headers and text members, parquet metadata
columns); image bytes are read when an item is loaded, by seeking to the member in its tar
or by reading one parquet row group at a time, so embedding in plan order streams through
each shard once. A sample without image bytes (a failed download, a key without an image
member) stays in the dataset and fails when loaded, so ``embed`` records it in
``failures.parquet`` and skips it. ``sample_id`` is ``<shard>/<member or key>`` (e.g.
``00000.tar/000000017.jpg``) and ``path`` the same under the root, absolute.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from activevlm.data.dataset import ImageDataset, is_hidden
from activevlm.data.layouts import as_bool
from activevlm.data.manifest import optional_text, parse_labels, resolve_classnames
from activevlm.data.registry import register_layout
from activevlm.data.splits import split_items

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp")
META_FIELDS = ("caption", "label", "domain", "split")
WEBDATASET_EXPECTED = ("PATH/*.tar (or one .tar): webdataset shards whose samples are "
                       "<key>.jpg|png|webp with optional <key>.txt, <key>.cls, <key>.json")
PARQUET_EXPECTED = ("PATH/*.parquet (or one .parquet) written by img2dataset with "
                    "output_format=parquet: a binary image column jpg|png|webp|jpeg, optional "
                    "key, txt, label, domain, split, status, error_message")


class MissingImageError(FileNotFoundError):
    """A sample listed in an archive that has no image bytes (an ``OSError``: skipped)."""


class TarMembers:
    """Byte ranges of members in uncompressed tar files; ``read(i)`` seeks and reads one."""

    def __init__(self, files: list[str], file_index: np.ndarray, offset: np.ndarray,
                 size: np.ndarray, missing: list[str | None]):
        self.files, self.file_index, self.offset, self.size = files, file_index, offset, size
        self.missing = missing
        self._open: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.file_index)

    def __getstate__(self) -> dict:  # open handles stay in their process
        return {**self.__dict__, "_open": None}

    def read(self, i: int) -> bytes:
        if self.missing[i] is not None:
            raise MissingImageError(self.missing[i])
        k = int(self.file_index[i])
        if self._open is None or self._open[0] != k:
            if self._open is not None:
                self._open[1].close()
            self._open = (k, open(self.files[k], "rb"))  # noqa: SIM115  (kept open across reads)
        handle = self._open[1]
        handle.seek(int(self.offset[i]))
        return handle.read(int(self.size[i]))


class ParquetRows:
    """Rows of parquet files; ``read(i)`` returns row ``i``'s image bytes, reading (and
    keeping) one row group of the image column at a time."""

    def __init__(self, files: list[str], column: str, file_index: np.ndarray,
                 row_group: np.ndarray, row: np.ndarray, missing: list[str | None]):
        self.files, self.column = files, column
        self.file_index, self.row_group, self.row = file_index, row_group, row
        self.missing = missing
        self._group: tuple[int, int, pa.Array] | None = None

    def __len__(self) -> int:
        return len(self.file_index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None}

    def read(self, i: int) -> bytes:
        if self.missing[i] is not None:
            raise MissingImageError(self.missing[i])
        k, g = int(self.file_index[i]), int(self.row_group[i])
        if self._group is None or self._group[:2] != (k, g):
            table = pq.ParquetFile(self.files[k]).read_row_group(g, columns=[self.column])
            self._group = (k, g, table.column(0).combine_chunks())
        value = self._group[2][int(self.row[i])].as_py()
        if value is None:
            raise MissingImageError(f"{self.files[k]}: no image bytes in row "
                                    f"{int(self.row[i])} of row group {g}")
        return value


@dataclass
class ArchiveDataset(ImageDataset):
    """An `ImageDataset` whose images are bytes inside archives (``reader.read(i)``)."""

    reader: TarMembers | ParquetRows | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reader is None or len(self.reader) != len(self.items):
            raise ValueError(f"dataset {self.name!r}: the archive reader must have one entry "
                             f"per item ({len(self.items)})")

    def load_image(self, i: int) -> Image.Image:
        with Image.open(io.BytesIO(self.reader.read(i))) as image:
            return image.convert("RGB")


def _shard_files(path: Path, suffix: str, layout: str, expected: str) -> tuple[Path, list[Path]]:
    """(root, sorted shard files) for a folder of ``*suffix`` files or one such file."""
    if path.is_file() and path.name.endswith(suffix):
        return path.parent, [path]
    files = (sorted(p for p in path.iterdir() if p.name.endswith(suffix) and p.is_file()
                    and not is_hidden(p.name)) if path.is_dir() else [])
    if not files:
        found = "does not exist" if not path.exists() else "holds no such files"
        compressed = (sorted(p.name for p in path.glob("*.tar.*"))[:3]
                      if layout == "webdataset" and path.is_dir() else [])
        hint = (f" (compressed shards such as {compressed} cannot be read by seeking; "
                "decompress them)" if compressed else "")
        raise FileNotFoundError(f"{layout}: expected {expected}; {path} {found}{hint}")
    return path, files


def _text(raw: bytes) -> str | None:
    text = raw.decode("utf-8", errors="replace").strip()
    return text or None


def _tar_samples(tar: Path, rel: str) -> list[dict]:
    """One record per key of ``tar``, in member order."""
    samples: dict[str, dict] = {}
    try:
        with tarfile.open(tar, mode="r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                if is_hidden(base) or "." not in base:
                    continue
                stem, _, suffix = base.partition(".")
                key = f"{directory}/{stem}" if directory else stem
                record = samples.setdefault(key, {"key": key})
                suffix = suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    if "member" in record:
                        raise ValueError(f"webdataset {tar}: key {key!r} has two images "
                                         f"({record['member']}, {member.name})")
                    record |= {"member": member.name, "offset": member.offset_data,
                               "size": member.size}
                elif suffix in {"txt", "cls", "json"}:
                    raw = archive.extractfile(member).read()
                    if suffix == "json":
                        try:
                            meta = json.loads(raw)
                        except json.JSONDecodeError as error:
                            raise ValueError(f"webdataset {tar}: member {member.name} is not "
                                             f"valid JSON ({error})") from error
                        if isinstance(meta, dict):
                            record.update({f"json_{k}": meta.get(k) for k in META_FIELDS
                                           if meta.get(k) is not None})
                    else:
                        record[suffix] = _text(raw)
    except tarfile.ReadError as error:
        raise ValueError(f"webdataset: {tar} is not an uncompressed tar file ({error})") from error
    for record in samples.values():
        record["sample_id"] = f"{rel}/{record.get('member', record['key'])}"
    return list(samples.values())


def _label_column(records: pd.DataFrame, *candidates: str) -> pd.Series | None:
    """The first candidate column present, as int64 when all values are integers."""
    for name in candidates:
        if name in records.columns and records[name].notna().any():
            column = records[name]
            text = column.dropna().astype(str).str.strip()
            if text.str.fullmatch(r"-?\d+").all():
                return column.map(lambda v: None if pd.isna(v) else int(str(v).strip())
                                  ).astype("Int64")
            return column.astype(object)
    return None


def _finish(layout: str, root: Path, records: pd.DataFrame, label: pd.Series | None,
            classnames: Sequence[str] | str | Path | None, split: bool, ratios: Any,
            seed: int | None, description: dict[str, Any], reader) -> ArchiveDataset:
    names, source = resolve_classnames(classnames, root)
    table = pd.DataFrame(index=records.index) if label is None else pd.DataFrame({"label": label})
    labels, names = parse_labels(f"{layout} {root}", table, names, source)
    items = pd.DataFrame({"sample_id": records["sample_id"].astype(str),
                          "path": [str(root / s) for s in records["sample_id"]],
                          "label": labels})
    for column in ("domain", "split", "caption"):
        present = column in records.columns and records[column].notna().any()
        if present or column != "caption":
            items[column] = pd.Series(optional_text(records[column]) if present
                                      else [None] * len(items), dtype=object)
    description |= split_items(items, layout, split, ratios, seed)
    domains = sorted(items["domain"].dropna().unique())
    description |= {"layout": layout, "root": str(root), "classnames_from": source,
                    "domains": domains or None}
    return ArchiveDataset(layout, root, names, items, description, reader=reader)


def _first(records: pd.DataFrame, *columns: str) -> pd.Series:
    """Per row, the first non-null value among ``columns`` (missing columns skipped)."""
    out = pd.Series([None] * len(records), index=records.index, dtype=object)
    for name in reversed(columns):
        if name in records.columns:
            values = records[name]
            out = values.where(values.notna(), out).astype(object)
    return out


@register_layout("webdataset")
def load_webdataset(path: Path, *, classnames: Sequence[str] | str | Path | None = None,
                    split: bool = False, ratios: Any = None, seed: int | None = None
                    ) -> ArchiveDataset:
    """webdataset / img2dataset tar shards (see the module docstring).

    Labels come from ``.cls`` (else the json ``label``): integers index ``classnames`` (the
    option, or ``classnames.txt`` beside the shards); names map to the sorted unique names
    unless ``classnames`` is given. ``split=True`` assigns stratified train/val/test splits.
    """
    root, files = _shard_files(path, ".tar", "webdataset", WEBDATASET_EXPECTED)
    rows = []
    for k, tar in enumerate(files):
        rows.extend(r | {"file": k} for r in _tar_samples(tar, tar.relative_to(root).as_posix()))
    if not rows:
        raise FileNotFoundError(f"webdataset: no samples in {len(files)} tar file(s) under "
                                f"{root}; expected {WEBDATASET_EXPECTED}")
    records = pd.DataFrame(rows)
    for column in ("member", "offset", "size", "txt", "cls"):
        if column not in records.columns:
            records[column] = None
    records["caption"] = _first(records, "txt", "json_caption")
    records["domain"] = _first(records, "json_domain")
    records["split"] = _first(records, "json_split")
    records["label"] = _first(records, "cls", "json_label")
    has_image = records["member"].notna()
    missing = [None if ok else f"webdataset {files[f]}: key {key!r} has no image member "
               f"({'/'.join(IMAGE_SUFFIXES)})"
               for ok, f, key in zip(has_image, records["file"], records["key"], strict=True)]
    reader = TarMembers([str(f) for f in files], records["file"].to_numpy(np.int32),
                        records["offset"].fillna(0).to_numpy(np.int64),
                        records["size"].fillna(0).to_numpy(np.int64), missing)
    description = {"shards": len(files), "without_image": int((~has_image).sum())}
    return _finish("webdataset", root, records, _label_column(records, "label"), classnames,
                   as_bool(split, "split"), ratios, seed, description, reader)


def _image_column(file: Path, schema: pa.Schema, wanted: str | None) -> str:
    names = [wanted] if wanted else list(IMAGE_SUFFIXES)
    for name in names:
        if name in schema.names and (pa.types.is_binary(schema.field(name).type)
                                     or pa.types.is_large_binary(schema.field(name).type)):
            return name
    raise ValueError(f"img2dataset {file}: no binary image column {names} (columns: "
                     f"{schema.names}); expected {PARQUET_EXPECTED}")


@register_layout("img2dataset")
def load_img2dataset(path: Path, *, classnames: Sequence[str] | str | Path | None = None,
                     image_column: str | None = None, split: bool = False, ratios: Any = None,
                     seed: int | None = None) -> ArchiveDataset:
    """img2dataset parquet shards with the image bytes inside (see the module docstring).

    Rows whose ``status`` is not ``success`` or whose image is null fail when loaded (and so
    land in the pool's failures). Labels: ``label`` (else ``cls``), as for ``webdataset``.
    """
    root, files = _shard_files(path, ".parquet", "img2dataset", PARQUET_EXPECTED)
    parts, column = [], None
    for k, file in enumerate(files):
        try:
            shard = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"img2dataset: {file} is not a readable parquet file ({error})"
                             ) from error
        name = _image_column(file, shard.schema_arrow, image_column)
        if column is not None and name != column:
            raise ValueError(f"img2dataset {file}: image column {name!r}, but earlier shards "
                             f"use {column!r}")
        column = name
        wanted = [c for c in ("key", "txt", "caption", "label", "cls", "domain", "split",
                              "status", "error_message") if c in shard.schema_arrow.names]
        part = shard.read(columns=wanted).to_pandas() if wanted else pd.DataFrame(
            index=range(shard.metadata.num_rows))
        groups = [shard.metadata.row_group(g).num_rows for g in range(shard.num_row_groups)]
        part["file"] = k
        part["row_group"] = np.repeat(np.arange(len(groups)), groups)
        part["row"] = np.concatenate([np.arange(n) for n in groups]) if groups else []
        rel = file.relative_to(root).as_posix()
        keys = part["key"].astype(str) if "key" in part.columns else part.index.astype(str)
        part["sample_id"] = [f"{rel}/{key}" for key in keys]
        parts.append(part)
    records = pd.concat(parts, ignore_index=True)
    if records.empty:
        raise FileNotFoundError(f"img2dataset: no rows in {len(files)} parquet file(s) under "
                                f"{root}; expected {PARQUET_EXPECTED}")
    records["caption"] = _first(records, "txt", "caption")
    status = _first(records, "status")
    error = _first(records, "error_message")
    missing = [None if s is None or s == "success" else
               f"img2dataset {files[f]}: row {r} of row group {g} has status {s!r}"
               + (f" ({e})" if e else "")
               for s, e, f, g, r in zip(status, error, records["file"], records["row_group"],
                                        records["row"], strict=True)]
    reader = ParquetRows([str(f) for f in files], column, records["file"].to_numpy(np.int32),
                         records["row_group"].to_numpy(np.int64),
                         records["row"].to_numpy(np.int64), missing)
    description = {"shards": len(files), "image_column": column,
                   "not_success": sum(m is not None for m in missing)}
    return _finish("img2dataset", root, records, _label_column(records, "label", "cls"),
                   classnames, as_bool(split, "split"), ratios, seed, description, reader)
