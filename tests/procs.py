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
    """``python -m activevlm ARGS`` as a child process (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "activevlm", *args], cwd=ROOT,
                            env=cli_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run_cli(args: list[str], timeout: float = 600, **env: str) -> tuple[int, str]:
    proc = start_cli(args, **env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out
