"""Names that become file or folder names must stay inside their folder."""

from __future__ import annotations

from activevlm.utils.errors import ConfigError


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
