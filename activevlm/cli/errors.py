"""The one place where library errors become a command-line message and exit status.

A user error is printed as ``error: <paragraph>`` on stderr with exit status 1 and no
traceback. User errors are every :class:`~activevlm.utils.errors.ActiveVLMError` and the
``ValueError`` / ``OSError`` that activevlm's own code raises on purpose (the innermost frame
of the traceback is in the package). Anything else is a bug and keeps its traceback.
With ``--debug`` (or ``ACTIVEVLM_DEBUG=1``) the messages of the library errors behind it
follow the paragraph, one ``debug:`` line each; the paragraph itself never quotes them.
Every path argument is resolved (``Path.resolve()``: ``..``, symlinks, the working folder)
before the command sees it, so its checks and its writes name the same file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import typer

import activevlm
from activevlm.utils.errors import ActiveVLMError, ConfigError

EXIT_USER_ERROR = 1
DEBUG_ENV = "ACTIVEVLM_DEBUG"
_debug = {"flag": False}  # --debug of the current invocation (reset by every invocation)


def set_debug(flag: bool) -> None:
    """Record this invocation's ``--debug`` (it must not leak into later invocations of the
    same process, e.g. a notebook or a test calling the CLI twice)."""
    _debug["flag"] = flag
_PACKAGE = Path(activevlm.__file__).resolve().parent


def raised_by_activevlm(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is activevlm code (a deliberate
    ``raise``), not a library that activevlm called."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, ActiveVLMError):
        return True
    return isinstance(err, ValueError | OSError) and raised_by_activevlm(err)


def _resolve(name: str, path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # a symbolic-link loop
        raise ConfigError(f"{name.replace('_', '-')} {path}: the path cannot be resolved "
                          "(a symbolic-link loop?)") from e


def user_errors(command: Callable) -> Callable:
    """Wrap a Typer command: path arguments resolved; user errors -> one paragraph on stderr
    and exit status 1."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            kwargs = {k: _resolve(k, v) if isinstance(v, Path) else v
                      for k, v in kwargs.items()}
            return command(*args, **kwargs)
        except Exception as e:
            if not is_user_error(e):
                raise
            message = " ".join(str(e).split()) or type(e).__name__
            typer.echo(f"error: {message}", err=True)
            if _debug["flag"] or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                cause = e.__cause__ or e.__context__
                while cause is not None:
                    typer.echo(f"debug: {type(cause).__name__}: {cause}", err=True)
                    cause = cause.__cause__ or cause.__context__
            raise typer.Exit(EXIT_USER_ERROR) from None

    return run


def guard_commands(app: typer.Typer) -> None:
    """Apply :func:`user_errors` to every command of ``app`` and of its sub-apps."""
    for command in app.registered_commands:
        command.callback = user_errors(command.callback)
    for group in app.registered_groups:
        guard_commands(group.typer_instance)
