"""Dataset layouts by name, and `load_dataset` which dispatches ``"layout:PATH"`` specs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activevlm.data.dataset import ImageDataset
from activevlm.utils.plugins import load_plugins, plugin_hint


@dataclass(frozen=True)
class Layout:
    name: str
    loader: Callable[..., ImageDataset]
    takes_path: bool


_LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str, *, takes_path: bool = True) -> Callable:
    """Decorator registering ``loader(path: Path, **options) -> ImageDataset`` as ``name``.

    With ``takes_path=False`` the loader is called as ``loader(**options)`` and the spec is
    the bare name (``"demo"``).
    """

    def decorate(loader: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        if name in _LAYOUTS:
            raise ValueError(f"dataset layout {name!r} is already registered")
        _LAYOUTS[name] = Layout(name, loader, takes_path)
        return loader

    return decorate


def available_layouts() -> list[str]:
    """Registered layout names (plugins' included), sorted."""
    load_plugins()
    return sorted(_LAYOUTS)


def load_dataset(spec: str, **options: Any) -> ImageDataset:
    """Load a dataset from ``"layout:PATH"`` (``folder:``, ``manifest:``, ``officehome:``,
    ``pacs:``, ``imagenet:`` ...) or a registered name without a path (``"demo"``). A name
    not registered yet is looked up in the ``activevlm.plugins`` entry points first.

    ``options`` go to the layout (e.g. ``seed=1, ratios="70/10/20"``); unknown ones are an
    error naming the accepted ones.
    """
    name, sep, raw_path = spec.partition(":")
    failures = load_plugins() if name not in _LAYOUTS else {}
    layout = _LAYOUTS.get(name)
    if layout is None:
        hint = (" (a plain path? write folder:PATH or manifest:FILE)"
                if Path(spec).expanduser().exists() else "")
        raise ValueError(f"unknown dataset spec {spec!r}{hint}; expected LAYOUT:PATH with "
                         f"LAYOUT one of {available_layouts()}.{plugin_hint(failures)}")
    _check_options(layout, options)
    if not layout.takes_path:
        if raw_path:
            raise ValueError(f"dataset {name!r} takes no path; write {name!r}, not {spec!r}")
        return layout.loader(**options)
    if not raw_path:
        raise ValueError(f"dataset spec {spec!r} lacks a path; expected {name}:PATH")
    return layout.loader(Path(raw_path).expanduser().resolve(), **options)


def _check_options(layout: Layout, options: dict[str, Any]) -> None:
    params = inspect.signature(layout.loader).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"dataset layout {layout.name!r} has no options {unknown}; "
                         f"it accepts {accepted}")
