"""Small C kernels compiled on first use by the system C compiler and called through ctypes.

A kernel is a C file shipped in the package. ``load_native`` compiles it once per machine into
the user cache (``cache_dir()/native``), under a name that hashes the source, the compiler
command and this CPU's feature flags (``-march=native`` code is never loaded on another CPU).
The library is written to a temporary name and renamed, so concurrent processes never load a
half-written file; the caller's ``check`` then compares it with a reference computation before
it is used. With no compiler, a failed compile or check, or ``ACTIVEVLM_NATIVE=0``, the
result is ``None`` and the caller runs its plain torch path (no compiler or disabled: an info
log line; a failed compile or check: a warning naming the reason).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

from activevlm.utils.paths import cache_dir

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared")
LIBS = ("-lm",)
DISABLE_ENV = "ACTIVEVLM_NATIVE"

# name -> (restype, argtypes) of one exported C function
Signatures = Mapping[str, tuple[object, list[object]]]


def native_enabled() -> bool:
    """False when ``ACTIVEVLM_NATIVE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def compiler() -> list[str] | None:
    """The C compiler: ``$CC``, else the one Python was built with, else ``cc``; None if none."""
    for cmd in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc"):
        words = shlex.split(cmd) if cmd else []
        if words and shutil.which(words[0]):
            return words
    return None


def cpu_signature() -> str:
    """This CPU's model and feature flags (``/proc/cpuinfo``), else the platform's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep))) or f"{platform.machine()} {platform.processor()}"


def load_native(package: str, filename: str, signatures: Signatures,
                check: Callable[[ctypes.CDLL], bool]) -> ctypes.CDLL | None:
    """The compiled library of ``package/filename`` with ``signatures`` set, or None.

    ``check(lib)`` must return True for the library to be used (it compares the kernel with a
    reference computation). Cached per process; compiled at most once per machine.
    """
    sigs = tuple((name, (res, tuple(args))) for name, (res, args) in sorted(signatures.items()))
    return _load(package, filename, sigs, check)


@functools.cache
def _load(package: str, filename: str, signatures: tuple, check) -> ctypes.CDLL | None:
    if not native_enabled():
        log.info("native kernel %s disabled by %s", filename, DISABLE_ENV)
        return None
    cc = compiler()
    if cc is None:
        log.info("no C compiler found: %s runs in plain torch", filename)
        return None
    source = resources.files(package).joinpath(filename).read_bytes()
    try:
        path = _compiled(source, filename, cc)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a damaged cached library: build it again
            path.unlink(missing_ok=True)
            lib = ctypes.CDLL(str(_compiled(source, filename, cc)))
        for name, (restype, argtypes) in signatures:
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        ok = check(lib)
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        ok, why = False, f"{type(err).__name__}: {err}"
    else:
        why = "its result differs from the reference computation"
    if not ok:
        warnings.warn(f"native kernel {filename} is not used ({why}); running the plain torch "
                      f"path instead (set {DISABLE_ENV}=0 to skip the attempt)", stacklevel=3)
        return None
    return lib


def _compiled(source: bytes, filename: str, cc: list[str]) -> Path:
    """Compile ``source`` into the cache unless a library for this source, compiler and CPU is
    there already; returns the library's path."""
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=60)
    key = hashlib.sha256(b"\0".join([
        source, " ".join([*cc, *FLAGS, *LIBS]).encode(), version.stdout.encode(),
        cpu_signature().encode()])).hexdigest()[:16]
    folder = cache_dir() / "native"
    path = folder / f"{Path(filename).stem}-{key}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        src, out = Path(tmp) / filename, Path(tmp) / path.name
        src.write_bytes(source)
        done = subprocess.run([*cc, *FLAGS, str(src), "-o", str(out), *LIBS],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise subprocess.SubprocessError(
                f"{' '.join(cc)} exited with {done.returncode}: {done.stderr.strip()[:500]}")
        os.replace(out, path)
    return path
