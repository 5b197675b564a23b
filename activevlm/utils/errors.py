"""The root of activevlm's user-facing errors.

Every area has one error type (``PoolError`` in ``pool``, ``RunError`` in ``runs``,
``PosteriorError`` in ``bayes``, ``ModelFileError`` in ``models``, ``ConfigError`` for option
and configuration values, ``StorageError`` for the file system). Each derives from
:class:`ActiveVLMError` and carries one paragraph that names the file, the field and the
offending value; the command line prints that paragraph and exits with status 1, without a
traceback.
"""

from __future__ import annotations


class ActiveVLMError(Exception):
    """Bad input or environment, explained in one paragraph (no traceback needed)."""


class ConfigError(ActiveVLMError, ValueError):
    """An option or a configuration file value that cannot be used."""


class StorageError(ActiveVLMError, OSError):
    """A file could not be written or read (full disk, read-only or unreadable directory).

    Raised before anything is renamed into place, so the files it names are as they were.
    """
