"""Where activevlm keeps its user cache, and names that become file or folder names (which
must stay inside their folder)."""

from __future__ import annotations

import os
from pathlib import Path

from activevlm.utils.errors import ConfigError


def cache_dir() -> Path:
    """activevlm's user cache: ``$XDG_CACHE_HOME/activevlm``, else ``~/.cache/activevlm``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "activevlm"


def safe_name(value, what: str) -> str:
    """``value`` as a single path component, or :class:`ConfigError` naming ``what``.

    Refused: empty names, ``.`` and ``..``, separators (``/`` and ``\\``), NUL and other
    control characters, and leading ``~`` (which a shell or ``expanduser`` would expand).
    """
    name = str(value)
    bad = (not name.strip() or name in (".", "..") or "/" in name or "\\" in name
           or name.startswith("~") or any(ord(c) < 32 for c in name))
    if bad:
        raise ConfigError(f"{what} {value!r} cannot be used as a folder or file name: it must be "
                          "one non-empty path component (no '/', '\\', '..', '~' or control "
                          "characters), so that it stays inside its output folder")
    return name
