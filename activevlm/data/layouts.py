"""Folder-tree layouts (``[<domain>/]<class>/<image>``), described by a table of `TreeLayout`s.

Expected layouts (images: .jpg/.jpeg/.png/.bmp/.webp/.gif/.tif/.tiff in any
case, hidden entries skipped):

- ``folder:PATH`` -- ``PATH/<class>/<image>``, or ``PATH/<domain>/<class>/<image>`` with
  ``domains=True``; classnames = sorted class folder names.
- ``officehome:PATH`` -- ``PATH/<Art|Clipart|Product|Real World>/<class>/<image>`` (also
  ``Real_World``; PATH may be the parent of ``OfficeHomeDataset_10072016/``), 65 classes.
- ``pacs:PATH`` -- ``PATH/<art_painting|cartoon|photo|sketch>/<class>/<image>``, or PATH
  holding ``PACS/`` (or ``kfold/``), 7 classes.
- ``imagenet:PATH`` -- the validation set in wnid folders: ``PATH/val/<wnid>/<image>`` or
  ``PATH/<wnid>/<image>`` (e.g. ``val/n01440764/ILSVRC2012_val_00000293.JPEG``).
- ``imagenet-r:PATH`` / ``imagenet-a:PATH`` -- ``PATH/<wnid>/<image>`` (or under
  ``imagenet-r/`` / ``imagenet-a/``) with wnids of the shipped 200-class list.
- ``imagenet-sketch:PATH`` -- ``PATH/<wnid>/<image>`` (or under ``sketch/``).
- ``imagenet-v2:PATH`` -- ``PATH/<0..999>/<image>`` (folder name = class index).

OfficeHome and PACS are split into train/val/test (64/16/20 per domain and class, seed 0) by
default; every tree layout takes ``split``, ``ratios`` and ``seed``. The ImageNet layouts
label with the 1000-class ids and CLIP class names. ``demo`` (no path) is registered by the
demo's plugin (``activevlm.demo.plugin``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from activevlm.data import classlists
from activevlm.data.dataset import (
    IMAGE_EXTENSIONS,
    ImageDataset,
    is_hidden,
    list_images,
    subfolders,
)
from activevlm.data.registry import register_layout
from activevlm.data.splits import split_items

Ratios = Sequence[float] | str


@dataclass(frozen=True)
class TreeLayout:
    """How one dataset stores its images in folders.

    ``class_folders`` gives label i <-> folder name i (None: the sorted folder names found);
    ``classnames`` the names shown to the model (None: the folder names); ``allowed`` the
    class folders accepted (None: all of ``class_folders``); ``domains`` maps each domain to
    the folder names accepted for it (None: no domain level); ``wrappers`` are sub-folders of
    PATH tried when PATH itself does not hold the tree; ``subset`` names the shipped subset
    list that becomes ``ImageDataset.class_subset``; ``split`` is the default of the split
    option (deterministic stratified train/val/test).
    """

    name: str
    expected: str
    class_folders: Callable[[], list[str]] | None = None
    classnames: Callable[[], list[str]] | None = None
    allowed: Callable[[], list[str]] | None = None
    domains: dict[str, tuple[str, ...]] | None = None
    wrappers: tuple[str, ...] = ()
    subset: str | None = None
    split: bool = False


def _shipped(name: str) -> Callable[[], list[str]]:
    return lambda: list(classlists.read_list(name))


def _imagenet_indices() -> list[str]:
    return [str(i) for i in range(1000)]


_IMAGENET = {"class_folders": classlists.imagenet_wnids,
             "classnames": classlists.imagenet_classnames}

TREE_LAYOUTS: tuple[TreeLayout, ...] = (
    TreeLayout(
        "officehome", "PATH/<Art|Clipart|Product|Real World>/<class>/<image> with the 65 "
        "OfficeHome class folders (Alarm_Clock, ...)",
        class_folders=_shipped("officehome_classes"),
        domains={"Art": ("Art",), "Clipart": ("Clipart",), "Product": ("Product",),
                 "Real World": ("Real World", "Real_World")},
        wrappers=("OfficeHomeDataset_10072016",), split=True),
    TreeLayout(
        "pacs", "PATH/<art_painting|cartoon|photo|sketch>/<class>/<image> (or PATH/PACS/...) "
        "with the classes dog, elephant, giraffe, guitar, horse, house, person",
        class_folders=_shipped("pacs_classes"),
        domains={d: (d,) for d in ("art_painting", "cartoon", "photo", "sketch")},
        wrappers=("PACS", "kfold", "PACS/kfold"), split=True),
    TreeLayout(
        "imagenet", "PATH/<wnid>/<image> or PATH/val/<wnid>/<image>: the ImageNet-1k "
        "validation set in wnid folders (e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)",
        wrappers=("val",), **_IMAGENET),
    TreeLayout(
        "imagenet-r", "PATH/<wnid>/<image> (or PATH/imagenet-r/...) with the 200 ImageNet-R "
        "wnids (activevlm/data/classnames/imagenet_r_wnids.txt)",
        allowed=_shipped("imagenet_r_wnids"), wrappers=("imagenet-r",), subset="imagenet_r",
        **_IMAGENET),
    TreeLayout(
        "imagenet-a", "PATH/<wnid>/<image> (or PATH/imagenet-a/...) with the 200 ImageNet-A "
        "wnids (activevlm/data/classnames/imagenet_a_wnids.txt)",
        allowed=_shipped("imagenet_a_wnids"), wrappers=("imagenet-a",), subset="imagenet_a",
        **_IMAGENET),
    TreeLayout(
        "imagenet-sketch", "PATH/<wnid>/<image> (or PATH/sketch/...) with ImageNet-1k wnids",
        wrappers=("sketch",), **_IMAGENET),
    TreeLayout(
        "imagenet-v2", "PATH/<0..999>/<image>: class-index folders, as in "
        "imagenetv2-matched-frequency-format-val",
        class_folders=_imagenet_indices, classnames=classlists.imagenet_classnames,
        wrappers=("imagenetv2-matched-frequency-format-val",)),
)
FOLDER = TreeLayout("folder", "PATH/<class>/<image>")
FOLDER_WITH_DOMAINS = TreeLayout("folder", "PATH/<domain>/<class>/<image>")


def as_bool(value: Any, option: str) -> bool:
    """An option given as a bool, 0/1 or a yes/no/true/false string."""
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
        return value.lower() in {"1", "true", "yes"}
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"option {option}={value!r} must be true or false")


def _describe(folder: Path, limit: int = 8) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist" if not folder.exists() else f"{folder} is a file"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                     if not is_hidden(p.name))
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries)} entries)"
                                          if len(entries) > limit else "")
    return f"{folder} holds [{shown}]"


def _find_root(layout: TreeLayout, path: Path, accepted: set[str] | None) -> Path:
    """PATH or the first of its wrapper sub-folders holding an accepted child folder."""
    for candidate in (path, *(path / w for w in layout.wrappers)):
        if candidate.is_dir() and (accepted is None or accepted & set(subfolders(candidate))):
            return candidate
    raise FileNotFoundError(f"{layout.name}: expected {layout.expected}; found "
                            f"{_describe(path)}")


def _reject_unknown(layout: TreeLayout, folder: Path, names: Sequence[str], kind: str) -> None:
    if names:
        shown = ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")
        raise ValueError(f"{layout.name}: unknown {kind} folders {shown} in {folder}; "
                         f"expected {layout.expected}")


def load_tree(layout: TreeLayout, path: Path, *, split: bool | None = None,
              ratios: Ratios | None = None, seed: int | None = None,
              discover_domains: bool = False) -> ImageDataset:
    """Scan ``path`` as ``layout``; labels index ``class_folders``; images sorted by path."""
    do_split = layout.split if split is None else as_bool(split, "split")
    folders = layout.class_folders() if layout.class_folders else None
    allowed = set(layout.allowed() if layout.allowed else folders or ())
    domain_of = {f: d for d, names in (layout.domains or {}).items() for f in names}
    accepted = set(domain_of) if layout.domains else (allowed or None)
    root = _find_root(layout, path, accepted)

    if layout.domains:
        found = subfolders(root)
        _reject_unknown(layout, root, [f for f in found if f not in domain_of], "domain")
        domain_dirs = [(domain_of[f], root / f) for f in found]
    elif discover_domains:
        domain_dirs = [(f, root / f) for f in subfolders(root)]
    else:
        domain_dirs = [(None, root)]

    class_dirs: list[tuple[str | None, str, Path]] = []
    for domain, folder in domain_dirs:
        names = subfolders(folder)
        if allowed:
            _reject_unknown(layout, folder, [n for n in names if n not in allowed], "class")
        class_dirs.extend((domain, n, folder / n) for n in names)
    if folders is None:
        folders = sorted({name for _, name, _ in class_dirs})
    label_of = {name: i for i, name in enumerate(folders)}

    rows = [(p.relative_to(root).as_posix(), str(p), label_of[name], domain)
            for domain, name, folder in class_dirs for p in list_images(folder)]
    if not rows:
        where = "; ".join(_describe(f) for _, f in domain_dirs[:4])
        kinds = "/".join(sorted(IMAGE_EXTENSIONS))
        raise FileNotFoundError(f"{layout.name}: no images ({kinds}) found; "
                                f"expected {layout.expected}; {where}")
    items = pd.DataFrame(rows, columns=["sample_id", "path", "label", "domain"])
    description: dict[str, Any] = {
        "layout": layout.name, "root": str(root),
        "domains": sorted({d for d, _ in domain_dirs if d is not None}) or None,
        "classes_present": len({name for _, name, _ in class_dirs}),
    }
    description |= split_items(items, layout.name, do_split, ratios, seed)
    class_subset = classlists.imagenet_subset_ids(layout.subset) if layout.subset else None
    if class_subset is not None:
        description["class_subset"] = class_subset
    classnames = layout.classnames() if layout.classnames else folders
    return ImageDataset(layout.name, root, classnames, items, description, class_subset)


def _register_tree(layout: TreeLayout) -> None:
    @register_layout(layout.name)
    def load(path: Path, *, split: bool | None = None,
             ratios: Ratios | None = None, seed: int | None = None) -> ImageDataset:
        return load_tree(layout, path, split=split, ratios=ratios, seed=seed)


for _layout in TREE_LAYOUTS:
    _register_tree(_layout)


@register_layout("folder")
def load_folder(path: Path, *, domains: bool = False, split: bool = False,
                ratios: Ratios | None = None, seed: int | None = None) -> ImageDataset:
    """``PATH/<class>/<image>`` (or ``PATH/<domain>/<class>/<image>`` with ``domains=True``);
    classnames are the sorted class folder names (over all domains)."""
    with_domains = as_bool(domains, "domains")
    layout = FOLDER_WITH_DOMAINS if with_domains else FOLDER
    return load_tree(layout, path, split=split, ratios=ratios, seed=seed,
                     discover_domains=with_domains)
