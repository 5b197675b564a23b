"""Class lists and template lists shipped with the package (see ``classnames/README.md``)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def read_list(name: str) -> tuple[str, ...]:
    """The non-empty lines of the shipped file ``classnames/<name>.txt``, in file order."""
    path = resources.files("activevlm.data").joinpath("classnames", f"{name}.txt")
    if not path.is_file():
        raise FileNotFoundError(f"activevlm ships no list {name!r} (looked for {path})")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line.strip())


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in standard (sorted) order: label i <-> wnid i."""
    return list(read_list("imagenet_wnids"))


def imagenet_classnames() -> list[str]:
    """The 1000 CLIP ImageNet class names, aligned with :func:`imagenet_wnids`."""
    return list(read_list("imagenet_classnames"))


def imagenet_subset_ids(subset: str) -> list[int]:
    """Sorted 1000-class label ids of a 200-class subset: ``"imagenet_r"`` or ``"imagenet_a"``."""
    index = {w: i for i, w in enumerate(read_list("imagenet_wnids"))}
    return sorted(index[w] for w in read_list(f"{subset}_wnids"))
