"""Plugins: packages that register dataset layouts or models through the registries.

A plugin is a module named by an entry point in the group ``activevlm.plugins`` (pyproject:
``[project.entry-points."activevlm.plugins"] demo = "activevlm.demo.plugin"``); importing it
registers its names. The registries call :func:`load_plugins` when a name is unknown, so a
plugin is imported only when one of its names is asked for.
"""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "activevlm.plugins"
_loaded: set[str] = set()
_failed: dict[str, str] = {}


def load_plugins() -> dict[str, str]:
    """Import every not yet imported plugin of the group; returns the failures so far,
    ``{plugin name: "module: error"}``, for the caller's error message (never raises)."""
    for ep in entry_points(group=GROUP):
        if ep.name in _loaded or ep.name in _failed:
            continue
        try:
            ep.load()
        except Exception as error:  # noqa: BLE001  (any import error is reported by name)
            _failed[ep.name] = f"{ep.value}: {type(error).__name__}: {error}"
        else:
            _loaded.add(ep.name)
    return dict(_failed)


def plugin_hint(failures: dict[str, str]) -> str:
    """The sentence an unknown-name error appends: failed plugins by name, or how to refresh
    the entry points of an editable install."""
    if failures:
        listed = "; ".join(f"{name!r} ({why})" for name, why in sorted(failures.items()))
        return f" Plugins that failed to import: {listed}."
    return (f" (Names from plugins come from the {GROUP!r} entry points; after changing them "
            "in an editable install, reinstall the package.)")
