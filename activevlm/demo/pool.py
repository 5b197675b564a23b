"""The default pool: the demo world embedded by the demo model, cached in the user cache."""

from __future__ import annotations

from pathlib import Path

import torch

from activevlm.demo.captions import PROMPT_TEMPLATES
from activevlm.demo.model import load_demo_vlm
from activevlm.demo.world import DEFAULT_PER_CLASS, GENERATOR_VERSION, demo_dataset
from activevlm.pool import Pool, embed_dataset
from activevlm.utils.paths import cache_dir


def default_pool_dir(seed: int = 0, n_per_class: int = DEFAULT_PER_CLASS) -> Path:
    """Where ``demo_pool`` keeps the pool when no folder is given."""
    return cache_dir() / "demo" / f"pool-v{GENERATOR_VERSION}-seed{seed}-n{n_per_class}"


def demo_pool(out: str | Path | None = None, root: str | Path | None = None, seed: int = 0,
              n_per_class: int = DEFAULT_PER_CLASS, device: str | torch.device = "auto",
              batch_size: int = 256, progress: bool = True) -> Pool:
    """Generate the demo world (if needed) and embed it with ``activevlm-demo`` into a pool.

    ``out`` defaults to ``default_pool_dir(seed, n_per_class)`` and ``root`` (the images) to
    ``demo_dataset``'s cache folder. Goes through the same ``embed_dataset`` as any dataset,
    with the demo class prompts; a second call finds the complete pool and returns it.
    """
    dataset = demo_dataset(root, seed=seed, n_per_class=n_per_class, progress=progress)
    out = default_pool_dir(seed, n_per_class) if out is None else Path(out).expanduser()
    return embed_dataset(dataset, load_demo_vlm(device), out, batch_size=batch_size,
                         templates=list(PROMPT_TEMPLATES), progress=progress)
