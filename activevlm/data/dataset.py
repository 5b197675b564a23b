"""`ImageDataset`: a table of image files with labels, domains and splits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
COLUMNS = ("sample_id", "path", "label", "domain", "split")


def is_hidden(name: str) -> bool:
    """Hidden files and folders, and archive debris such as ``__MACOSX``."""
    return name.startswith(".") or name.startswith("__")


def is_image_file(name: str) -> bool:
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursively, hidden entries skipped), sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        found.extend(Path(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def subfolders(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of ``folder``, sorted."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name))


@dataclass
class ImageDataset:
    """Images with integer labels (-1 unknown) into ``classnames``.

    ``items`` has one row per image: ``sample_id`` (str, the path relative to ``root``, posix,
    unique), ``path`` (str, absolute), ``label`` (int64), ``domain`` (str or None), ``split``
    (str or None) and optionally ``caption`` (str or None). ``classnames`` are raw names
    (folder names); prompts clean them with :func:`activevlm.data.prompts.clean_classname`.
    ``class_subset`` lists the label ids that occur in the dataset's benchmark protocol when
    that is a strict subset of ``classnames`` (ImageNet-R/A: evaluate on these logits only).
    """

    name: str
    root: Path
    classnames: list[str]
    items: pd.DataFrame
    description: dict[str, Any] = field(default_factory=dict)
    class_subset: list[int] | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.classnames = list(self.classnames)
        missing = [c for c in ("sample_id", "path", "label") if c not in self.items.columns]
        if missing:
            raise ValueError(f"dataset {self.name!r}: items lack columns {missing}")
        items = self.items.reset_index(drop=True).copy()
        for column in ("domain", "split"):
            if column not in items.columns:
                items[column] = None
        items["label"] = items["label"].astype("int64")
        extra = ["caption"] if "caption" in items.columns else []
        self.items = items[[*COLUMNS, *extra]]
        duplicated = self.items["sample_id"][self.items["sample_id"].duplicated()]
        if len(duplicated):
            raise ValueError(f"dataset {self.name!r}: sample_id not unique, e.g. "
                             f"{duplicated.iloc[0]!r}")
        labels = self.items["label"]
        bad = labels[(labels < -1) | (labels >= len(self.classnames))]
        if len(bad):
            raise ValueError(f"dataset {self.name!r}: label {int(bad.iloc[0])} outside "
                             f"[-1, {len(self.classnames)}) for {len(self.classnames)} classes")
        if self.class_subset is not None:
            self.class_subset = sorted(int(c) for c in self.class_subset)

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, i: int) -> Image.Image:
        """The image of row ``i`` of ``items`` as an RGB PIL image."""
        with Image.open(self.items["path"].iloc[i]) as image:
            return image.convert("RGB")
