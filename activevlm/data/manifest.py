"""The ``manifest:FILE`` layout: a CSV or Parquet table listing the images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activevlm.data.dataset import ImageDataset
from activevlm.data.registry import register_layout

EXPECTED = ("FILE.csv or FILE.parquet with a column path (relative to the file's folder or "
            "absolute) and optional columns label (int or class name), domain, split, caption")


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in {".csv", ".parquet"}:
        found = "does not exist" if not path.exists() else "is not a .csv or .parquet file"
        raise FileNotFoundError(f"manifest: expected {EXPECTED}; {path} {found}")
    try:
        table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"manifest {path} is empty; expected {EXPECTED}") from e
    except Exception as e:  # pandas/pyarrow parser errors
        raise ValueError(f"manifest {path} is not a readable table (damaged, or rows with "
                         f"unbalanced quotes); expected {EXPECTED}") from e
    if "path" not in table.columns:
        raise ValueError(f"manifest {path}: no column 'path' (columns: {list(table.columns)}); "
                         f"expected {EXPECTED}")
    if table.empty:
        raise ValueError(f"manifest {path} has a header but no rows: it lists no images")
    return table


def read_classnames(source: Path) -> list[str]:
    if not source.is_file():
        raise FileNotFoundError(f"manifest: classnames file {source} does not exist")
    return [line.strip() for line in source.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def resolve_classnames(classnames: Sequence[str] | str | Path | None, root: Path
                       ) -> tuple[list[str] | None, str]:
    """Class names from the option (a list, or a text file with one name a line), else from
    ``root/classnames.txt``, else None (the label column decides); and where they came from."""
    if isinstance(classnames, str | Path):
        return read_classnames(Path(classnames).expanduser()), str(classnames)
    if classnames is not None:
        return [str(c) for c in classnames], "the classnames option"
    if (root / "classnames.txt").is_file():
        return read_classnames(root / "classnames.txt"), str(root / "classnames.txt")
    return None, "the label column"


def optional_text(column: pd.Series) -> list[str | None]:
    return [None if pd.isna(v) or str(v).strip() == "" else str(v) for v in column]


def parse_labels(where: str, table: pd.DataFrame, classnames: list[str] | None,
                 source: str) -> tuple[np.ndarray, list[str]]:
    """int64 labels (-1 for missing) of ``table["label"]`` (ints or class names) and the class
    names they index; errors start with ``where`` (e.g. ``"manifest FILE"``)."""
    if "label" not in table.columns:
        if classnames is None:
            raise ValueError(f"{where}: no label column and no class names; give the "
                             f"classnames option or a classnames.txt beside it")
        return np.full(len(table), -1, dtype=np.int64), classnames
    column = table["label"]
    if pd.api.types.is_numeric_dtype(column):
        if classnames is None:
            raise ValueError(f"{where}: integer labels need class names; give the "
                             f"classnames option or a classnames.txt beside it")
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        filled = np.where(missing, -1.0, values)
        bad = (filled != np.round(filled)) | (filled < -1) | (filled >= len(classnames))
        if bad.any():
            raise ValueError(f"{where}: label {column[bad].iloc[0]} is not an "
                             f"integer in [-1, {len(classnames)}) ({len(classnames)} classes "
                             f"from {source})")
        return filled.astype(np.int64), classnames
    names = [None if v is None else v.strip() for v in optional_text(column)]
    if classnames is None:
        classnames = sorted({n for n in names if n is not None})
    index: dict[str, int] = {}
    for i, name in enumerate(classnames):
        index.setdefault(name, i)
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise ValueError(f"{where}: unknown class names {shown} in column label "
                         f"({len(classnames)} classes from {source})")
    dupes = sorted({n for n in names if n is not None and classnames.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: class names {dupes} occur more than once in the "
                         f"class list from {source}; use integer labels")
    return np.array([-1 if n is None else index[n] for n in names], dtype=np.int64), classnames


@register_layout("manifest")
def load_manifest(path: Path, *, classnames: Sequence[str] | str | Path | None = None
                  ) -> ImageDataset:
    """Images listed in a CSV/Parquet file (see ``EXPECTED``).

    Class names come from ``classnames`` (a list, or a text file with one name a line), else
    from ``classnames.txt`` beside the manifest, else from the sorted unique label names.
    sample_id is the image path relative to the manifest's folder (absolute when outside it).
    """
    table = _read_table(path)
    root = path.parent
    names, source = resolve_classnames(classnames, root)
    labels, names = parse_labels(f"manifest {path}", table, names, source)

    raw = optional_text(table["path"])
    if None in raw:
        raise ValueError(f"manifest {path}: empty path in row {raw.index(None)}")
    absolute = [os.path.normpath(p if os.path.isabs(p) else root / p) for p in raw]
    missing = [a for a in absolute if not os.path.isfile(a)]
    if missing:
        raise FileNotFoundError(f"manifest {path}: {len(missing)} listed images do not exist, "
                                f"e.g. {missing[:3]}")
    sample_ids = [Path(os.path.relpath(a, root)).as_posix()
                  if Path(a).is_relative_to(root) else Path(a).as_posix() for a in absolute]
    repeated = pd.Series(sample_ids)[pd.Series(sample_ids).duplicated()]
    if len(repeated):
        raise ValueError(f"manifest {path}: {len(repeated)} rows repeat an image listed "
                         f"before, e.g. {repeated.iloc[0]!r}")
    items = pd.DataFrame({"sample_id": sample_ids, "path": absolute, "label": labels})
    for column in ("domain", "split", "caption"):
        if column in table.columns:
            items[column] = pd.Series(optional_text(table[column]), dtype=object)
    description: dict[str, Any] = {"layout": "manifest", "root": str(root), "file": str(path),
                                   "classnames_from": source}
    return ImageDataset("manifest", root, names, items, description)
