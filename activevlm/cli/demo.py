"""``activevlm demo``: build (or reuse) the cached demo world and its embedded pool."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def demo(
    out: Path | None = typer.Option(None, "--out", help="Pool folder (default: user cache)."),
    root: Path | None = typer.Option(None, "--root", help="Image folder (default: user cache)."),
    seed: int = typer.Option(0, help="World seed: same seed, same images."),
    per_class: int = typer.Option(100, "--per-class", help="Images per class and domain."),
    device: str = typer.Option("auto", help="auto, cpu or cuda[:i]."),
) -> None:
    """Generate the demo world, embed it with the shipped demo model, print where it is.

    The images and the pool go to $XDG_CACHE_HOME/activevlm/demo (~/.cache by default); a
    second run reuses both.
    """
    from activevlm.demo.pool import demo_pool
    from activevlm.demo.world import SOURCE_DOMAINS, TARGET_DOMAINS

    pool = demo_pool(out, root, seed=seed, n_per_class=per_class, device=device)
    counts = pool.items.groupby(["domain", "split"]).size().unstack(fill_value=0)
    console.print(counts.to_string())
    console.print(f"images  {pool.items['path'].iloc[0].rsplit('/images/', 1)[0]}\n"
                  f"pool    {pool.path}  ({len(pool)} images, {len(pool.classnames)} classes, "
                  f"model {pool.model_id})\n"
                  f"source domains {', '.join(SOURCE_DOMAINS)}; held-out target domains "
                  f"{', '.join(TARGET_DOMAINS)}")
