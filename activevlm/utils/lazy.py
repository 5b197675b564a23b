"""Lazy package exports (PEP 562): ``import activevlm.x`` stays cheap, names load on use.

A package ``__init__`` declares its public API once::

    __all__ = ["Strategy", "make_strategy"]
    __getattr__, __dir__ = lazy_exports(__name__, {"Strategy": "strategy", ...})

so that light modules of the package (option enums, config dataclasses) can be imported by
the CLI without importing torch, FAISS or the encoders.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps each exported name to the
    submodule (relative to ``package``) that defines it."""

    def __getattr__(name: str):
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
