"""Errors of run directories: their state, label files and the one-writer lock."""

from __future__ import annotations

from activevlm.utils.errors import ActiveVLMError


class RunError(ActiveVLMError, ValueError):
    """A run directory that is missing, malformed or does not match the pool or request."""


class LabelFileError(RunError):
    """A label file (CSV, Label Studio export) that cannot be read or does not fit the run."""


class RunLockedError(RunError):
    """Another process is writing the run; the message names it (pid, host, command)."""


class RunNotFoundError(RunError, FileNotFoundError):
    """There is no run (no ``state.json``) at the given directory."""
