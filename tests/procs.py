"""Helpers for tests that run activevlm as real processes and check files byte by byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(*folders: Path) -> dict[str, str]:
    """``{path: sha256 | "dir"}`` of everything under ``folders`` (missing ones are empty)."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")) if Path(folder).exists() else []:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def start_cli(args: list[str], **env: str) -> subprocess.Popen:
    """The activevlm command (``python -m activevlm.cli.main ARGS``), output captured."""
    return subprocess.Popen([sys.executable, "-m", "activevlm.cli.main", *args], cwd=ROOT,
                            env=cli_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_cli(args: list[str], timeout: float = 600, **env: str) -> tuple[int, str]:
    proc = start_cli(args, **env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def read_until(proc: subprocess.Popen, text: str, timeout: float = 600) -> str:
    """Read ``proc``'s output line by line until a line contains ``text``; returns the lines
    read (fails if the process ends or ``timeout`` seconds pass first)."""
    import selectors
    import time

    lines, deadline = [], time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                continue
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"process ended before printing {text!r}:\n"
                                     + "".join(lines))
            lines.append(line)
            if text in line:
                return "".join(lines)
    raise AssertionError(f"no {text!r} within {timeout} s:\n" + "".join(lines))


def gate(run: Path, then: list[str] | None = None) -> subprocess.Popen:
    """A process that holds ``run``'s lock until a line is written to its stdin; with
    ``then``, it runs ``activevlm THEN`` before it lets go (a writer finishing while others
    wait)."""
    command = f"app({then!r}, standalone_mode=False)" if then else "pass"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom activevlm.runs.lock import run_lock\n"
         "from activevlm.cli.main import app\n"
         f"with run_lock({str(run)!r}, command='gate'):\n"
         f"    print('held', flush=True)\n    sys.stdin.readline()\n    {command}"],
        env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def open_gate(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0
