"""Atomic file writes: a reader never sees a half-written file, a crash never loses the old one.

Files are written to a temporary sibling and renamed into place; folders (a posterior) are
written to a staging sibling and swapped in (:func:`atomic_replace_dir`) or, when files
are added to a folder (a selection round), moved in (:func:`staged_dir`), and
:func:`recover_dir` completes or rolls back a swap that a kill interrupted. A write that the
file system refuses (full disk, read-only or forbidden directory) raises
:class:`~activevlm.utils.errors.StorageError` naming the file, with the old file untouched.
JSON is written strictly (``allow_nan=False``): non-finite numbers become ``null``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from activevlm.utils.errors import StorageError

_UMASK = os.umask(0)
os.umask(_UMASK)

_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def storage_error(path: Path, err: OSError, action: str = "write") -> StorageError:
    """One paragraph for an OSError met while writing ``path``; the old file is unchanged."""
    why = _HINTS.get(err.errno, (err.strerror or "the file system refused it").lower())
    return StorageError(f"cannot {action} {path}: {why}; nothing was replaced, the existing "
                        "files are as they were")


def os_error_of(err: BaseException) -> OSError | None:
    """``err`` as an ``OSError`` when it is one or a library's wrapping of one (safetensors
    reports a full disk as ``SafetensorError: ... Os { code: 28, ... }``), else None."""
    if isinstance(err, OSError):
        return err
    found = re.search(r"\bOs \{ code: (\d+)", str(err))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


def _flush(tmp: Path) -> None:
    """fsync ``tmp`` (a separate function so tests can inject a full disk here)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto ``path``.

    The suffix is kept so that libraries which infer the format from it (numpy, safetensors)
    write the right thing. On an exception the temporary file is removed and ``path`` is
    left untouched; an ``OSError`` (full disk, read-only folder) becomes a ``StorageError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
    except OSError as e:
        raise storage_error(path, e) from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
            _flush(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
            os.replace(tmp, path)
        except StorageError:
            raise
        except Exception as e:
            if (os_err := os_error_of(e)) is None:
                raise
            raise storage_error(path, os_err) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def remove_temp_files(folder: str | Path, pattern: str = ".*.tmp*") -> list[Path]:
    """Delete leftovers of writes that a kill interrupted (``.<stem>.<random>.tmp<suffix>``)."""
    removed = []
    for p in Path(folder).glob(pattern):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_replace_dir(folder: str | Path, write: Callable[[Path], None]) -> None:
    """Replace ``folder`` as a whole by what ``write(staging)`` puts in a fresh staging folder.

    Order: ``write`` into ``.<name>.<id>.tmp``; rename it to ``.<name>.<id>.new`` (complete);
    rename ``folder`` to ``.<name>.<id>.old``; rename ``.new`` to ``folder``; delete ``.old``.
    A kill at any point leaves a state :func:`recover_dir` resolves: a complete ``.new``
    is the newest version, ``.old`` the previous one, ``.tmp`` is never used.
    """
    folder = Path(folder)
    tag = uuid.uuid4().hex[:8]
    tmp = folder.with_name(f".{folder.name}.{tag}.tmp")
    new = folder.with_name(f".{folder.name}.{tag}.new")
    old = folder.with_name(f".{folder.name}.{tag}.old")
    try:
        write(tmp)
        tmp.rename(new)
        if folder.exists():
            folder.rename(old)
        new.rename(folder)
    except StorageError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (os_err := os_error_of(e)) is None:
            raise
        raise storage_error(folder, os_err) from e
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(folder: str | Path) -> Iterator[Path]:
    """Yield a fresh staging folder next to ``folder`` to write into; when the block succeeds
    it is published by renames only: renamed to ``folder`` when that is missing, else each
    staged file replaces its namesake in ``folder`` (other files there stay). When the block
    fails, the staging folder is deleted and ``folder`` is as it was. Staging folders a kill
    left (``.<name>.<id>.stage``) are deleted first: the caller holds the writer lock."""
    folder = Path(folder)
    for left in folder.parent.glob(f".{folder.name}.*.stage"):
        shutil.rmtree(left, ignore_errors=True)
    stage = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.stage")
    try:
        stage.mkdir(parents=True)
        yield stage
        if folder.exists():
            for p in sorted(stage.iterdir()):
                os.replace(p, folder / p.name)
        else:
            stage.rename(folder)
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(folder, e) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def recover_dir(folder: str | Path, complete: Callable[[Path], bool] | None = None, *,
                cleanup: bool = False) -> Path | None:
    """Finish or roll back an interrupted :func:`atomic_replace_dir` of ``folder``.

    Only when ``folder`` is missing: the newest finished sibling is renamed into place (a
    ``.new`` one, or a ``.tmp`` one that ``complete(path)`` accepts: older versions renamed
    a finished ``.tmp`` straight into place), else the newest ``.old``, and the other
    siblings are deleted. ``cleanup=True`` (for callers holding the folder's writer lock)
    also deletes leftovers next to an existing ``folder``. Returns the restored sibling.
    """
    folder = Path(folder)
    parent = folder.parent
    if not parent.is_dir():
        return None

    def siblings(kind: str) -> list[Path]:
        found = parent.glob(f".{folder.name}.*.{kind}")
        return sorted((p for p in found if p.is_dir()), key=lambda p: p.stat().st_mtime)

    restored = None
    if not folder.exists():
        finished = siblings("new") + [p for p in siblings("tmp")
                                      if complete is not None and complete(p)]
        candidates = sorted(finished, key=lambda p: p.stat().st_mtime) or siblings("old")
        if candidates:
            restored = candidates[-1]
            restored.rename(folder)
        cleanup = True
    if cleanup:
        for kind in ("tmp", "new", "old"):
            for p in siblings(kind):
                shutil.rmtree(p, ignore_errors=True)
    return restored


def read_json(path: str | Path):
    """The parsed content of a JSON file; a malformed file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e.msg.lower()} at line {e.lineno}, "
                         f"column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: not UTF-8 text (byte {e.start})") from e
    except RecursionError as e:  # json nests one Python frame per level
        raise ValueError(f"{path} is not usable JSON: its lists or objects are nested too "
                         "deeply (thousands of levels)") from e


def finite_or_null(obj):
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps`` that always writes valid JSON: non-finite floats become ``null``."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, dumps_strict(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
