"""``--pool`` for every command: a pool directory, or the demo world when none is given."""

from __future__ import annotations

from pathlib import Path

import typer

POOL_OPTION_HELP = "Pool directory (from `activevlm embed`; default: the demo world)."
DEFAULT_RUN = Path("runs") / "demo"
RUN_OPTION_HELP = "Run directory (default: runs/demo, the demo world's `select` run)."


def pool_option():
    return typer.Option(None, "--pool", help=POOL_OPTION_HELP)


def open_pool_or_demo(pool: Path | None, progress: bool = False):
    """The pool at ``pool``, or the demo world's pool (generated and embedded on first use)."""
    from activevlm.demo.pool import demo_pool
    from activevlm.pool import open_pool

    return demo_pool(progress=progress) if pool is None else open_pool(pool)


def pool_folder(pool, name: str) -> Path:
    """Default output folder ``POOL/name`` of a command's results."""
    return Path(pool.path) / name
