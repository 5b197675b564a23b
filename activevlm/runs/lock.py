"""One writer per run: ``RUN/.lock`` names the process that is changing the run.

``select``, ``labels import``, ``finetune`` and ``loop`` (their library entry points, so
notebooks get it too) hold the lock while they read and write the run. A second writer
waits up to ``ACTIVEVLM_LOCK_WAIT`` seconds (default 10) for it, then stops with
:class:`RunLockedError` naming the holder. The lock file holds the holder's ``pid``, ``host``,
``command`` and start time; a lock left by a dead process on this host is stale and taken
over; a lock from another host is only named (remove it by hand once that run is gone). The
lock file is linked into place fully written, so a kill never leaves an empty one; whoever
takes the lock deletes the temporary files a killed writer left in the run (while it waits,
a writer says so on stderr). Taking and breaking locks is serialised by ``fcntl.flock`` on
the run directory itself (so no other file is left behind). The lock is re-entrant within a
process (``loop`` calls ``labels import`` while holding it).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from activevlm.runs.errors import RunLockedError
from activevlm.utils.io import remove_temp_files, storage_error

LOCK_FILE = ".lock"
DEFAULT_WAIT = 10.0
_held: dict[Path, int] = {}  # run directory -> nesting depth, in this process


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(run: str | Path) -> dict | None:
    """The content of ``run/.lock`` (pid, host, command, since), or None when unlocked."""
    try:
        raw = json.loads((Path(run) / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"pid": None, "host": None, "command": "unreadable lock file"}
    return raw if isinstance(raw, dict) else {"pid": None, "host": None, "command": str(raw)}


def is_stale(holder: dict) -> bool:
    """A lock is stale when its holder was on this host and is no longer running."""
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int)
            and pid != os.getpid() and not _pid_alive(pid))


def _describe(run: Path, holder: dict) -> str:
    return (f"run {run} is being changed by another process (pid {holder.get('pid')} on host "
            f"{holder.get('host')}, `{holder.get('command')}`, since {holder.get('since')}); "
            f"wait for it to finish, or, if that process is gone, delete {run / LOCK_FILE}")


@contextlib.contextmanager
def _guard(run: Path) -> Iterator[None]:
    fd = os.open(run, os.O_RDONLY)  # flock works on a directory's descriptor
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _try_take(run: Path, command: str) -> dict | None:
    """Take the lock if free (or stale); return None on success, else the holder."""
    with _guard(run):
        holder = read_holder(run)
        if holder is not None and is_stale(holder):
            (run / LOCK_FILE).unlink(missing_ok=True)
            holder = None
        if holder is not None:
            return holder
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        # written completely under another name, then linked into place: a kill can never
        # leave an empty lock file (os.link fails if the lock exists, as O_EXCL would)
        tmp = run / f".{LOCK_FILE.lstrip('.')}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        try:
            os.link(tmp, run / LOCK_FILE)
        except FileExistsError:
            return read_holder(run) or {"pid": None, "host": None, "command": "unknown"}
        finally:
            tmp.unlink(missing_ok=True)
        for folder in [run, *(p for p in run.rglob("*") if p.is_dir())]:
            remove_temp_files(folder)  # partial writes of a killed writer (none is running)
        return None


@contextlib.contextmanager
def run_lock(run: str | Path, *, wait: float | None = None,
             command: str | None = None) -> Iterator[None]:
    """Hold the run's lock for the ``with`` block (creating ``run`` if needed).

    Waits up to ``wait`` seconds (default: ``ACTIVEVLM_LOCK_WAIT`` or 10) for another writer;
    then raises :class:`RunLockedError` naming it.
    """
    run = Path(run).resolve()
    if _held.get(run):
        _held[run] += 1
        try:
            yield
        finally:
            _held[run] -= 1
        return
    wait = float(os.environ.get("ACTIVEVLM_LOCK_WAIT", DEFAULT_WAIT)) if wait is None else wait
    command = command or " ".join(["activevlm", *sys.argv[1:]])[:200]
    try:
        run.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        waiting = False
        while (holder := _try_take(run, command)) is not None:
            if time.monotonic() >= deadline:
                raise RunLockedError(_describe(run, holder))
            if not waiting:
                print(f"waiting up to {wait:.0f} s: {_describe(run, holder)}", file=sys.stderr,
                      flush=True)
                waiting = True
            time.sleep(0.2)
    except OSError as e:
        raise storage_error(run / LOCK_FILE, e, "lock") from e
    _held[run] = 1
    try:
        yield
    finally:
        del _held[run]
        with _guard(run):
            holder = read_holder(run)
            if holder is not None and holder.get("pid") == os.getpid():
                (run / LOCK_FILE).unlink(missing_ok=True)


def writes_run(argument: str) -> Callable:
    """Decorator: the function holds the lock of the run given by its ``argument`` for the
    whole call: a ``RunState`` (reloaded from disk once the lock is held, so no update is
    lost), a ``RunDir`` or a run directory path."""

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args, **kwargs):
            value = signature.bind(*args, **kwargs).arguments[argument]
            path = Path(getattr(value, "path", value))  # RunState, RunDir or a path
            with run_lock(path):
                if hasattr(value, "reload"):
                    value.reload()
                return func(*args, **kwargs)

        return locked

    return decorate
