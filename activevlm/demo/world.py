"""The demo world: seeded generation of captioned images, in memory or as a manifest dataset.

Every image has its own random stream ``default_rng([seed, stream, domain, class, index])``,
so an image never depends on how many others are drawn, in which order or by which worker.
Streams keep the sets apart: ``WORLD`` (the on-disk demo dataset), ``EVAL`` (the model card's
held-out table) and ``TRAIN + epoch`` (the training script's fresh images per epoch).

On disk (``write_world``)::

    ROOT/world.json                          generator version and parameters
    ROOT/manifest.csv                        path,label,domain,split,caption
    ROOT/images/DOMAIN/DOMAIN_00000.png      numbered in a seeded shuffled order, so that a
                                             file name (the sample id) hides the class

read back by the regular ``manifest:`` layout (``load_dataset("manifest:ROOT/manifest.csv")``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.progress import Progress

from activevlm.data import ImageDataset, load_dataset
from activevlm.data.splits import DEFAULT_RATIOS, SPLIT_NAMES, split_counts
from activevlm.demo.captions import caption
from activevlm.demo.render import DOMAINS, render
from activevlm.demo.shapes import CLASSES
from activevlm.utils.io import atomic_write_csv, atomic_write_json
from activevlm.utils.paths import cache_dir

GENERATOR_VERSION = 3  # 3: file names no longer contain the class
CLASSNAMES: tuple[str, ...] = tuple(CLASSES)
SOURCE_DOMAINS: tuple[str, ...] = ("product", "photo")
"""Domains the demo model was trained on."""
TARGET_DOMAINS: tuple[str, ...] = ("clipart", "sketch")
"""Domains held out from training (the domain shift labels should fix)."""
IMAGE_SIZE = 64
WORLD, EVAL, TRAIN = 0, 1, 2
NAMES = 2**31  # the stream that shuffles file numbers (no image stream reaches it)
DEFAULT_PER_CLASS = 100


@dataclass(frozen=True)
class Sample:
    """Images ``pixels [N, H, W, 3] uint8`` and their ``items`` (label, classname, domain,
    index, caption), row i <-> image i."""

    pixels: np.ndarray
    items: pd.DataFrame


def _keys(domains: Sequence[str], n_per_class: int) -> list[tuple[int, int, int]]:
    for d in domains:
        if d not in DOMAINS:
            raise ValueError(f"unknown demo domain {d!r}; known: {', '.join(DOMAINS)}")
    return [(DOMAINS.index(d), c, i) for d in domains for c in range(len(CLASSNAMES))
            for i in range(n_per_class)]


def _draw(seed: int, stream: int, key: tuple[int, int, int], size: int):
    d, c, i = key
    rng = np.random.default_rng([seed, stream, d, c, i])
    image = render(CLASSNAMES[c], DOMAINS[d], rng, size=size)
    return image.pixels, caption(CLASSNAMES[c], DOMAINS[d], image, rng)


def _draw_chunk(seed: int, stream: int, keys: list[tuple[int, int, int]], size: int):
    out = [_draw(seed, stream, k, size) for k in keys]
    return np.stack([p for p, _ in out]), [t for _, t in out]


def sample(domains: Sequence[str] = DOMAINS, n_per_class: int = 20, seed: int = 0,
           stream: int = EVAL, size: int = IMAGE_SIZE, workers: int = 0,
           progress: bool = False) -> Sample:
    """Draw ``n_per_class`` images of every class in every domain, in memory.

    Rows are ordered by domain, class, index. ``workers > 1`` draws in that many processes
    (same result). ``stream`` picks the set (``WORLD``, ``EVAL``, ``TRAIN + epoch``).
    """
    keys = _keys(domains, n_per_class)
    chunk = 250
    chunks = [keys[k:k + chunk] for k in range(0, len(keys), chunk)]
    pixels, captions = [], []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("drawing demo images", total=len(keys))
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_draw_chunk, [seed] * len(chunks), [stream] * len(chunks),
                                   chunks, [size] * len(chunks))
                for (p, t), ks in zip(results, chunks, strict=True):
                    pixels.append(p)
                    captions += t
                    bar.advance(task, len(ks))
        else:
            for ks in chunks:
                p, t = _draw_chunk(seed, stream, ks, size)
                pixels.append(p)
                captions += t
                bar.advance(task, len(ks))
    d, c, i = (np.array(v, dtype=np.int64) for v in zip(*keys, strict=True))
    items = pd.DataFrame({
        "label": c, "classname": np.array(CLASSNAMES)[c], "domain": np.array(DOMAINS)[d],
        "index": i, "caption": captions,
    })
    return Sample(np.concatenate(pixels), items)


def file_names(items: pd.DataFrame, seed: int) -> list[str]:
    """``images/DOMAIN/DOMAIN_NNNNN.png`` per row of ``items`` (domain, label, index): the
    numbers are a seeded shuffle of 0..n-1 within each domain, so the name hides the class."""
    numbers = np.empty(len(items), dtype=np.int64)
    for d, rows in items.groupby("domain", sort=False).indices.items():
        rng = np.random.default_rng([seed, NAMES, DOMAINS.index(d)])
        numbers[rows] = rng.permutation(len(rows))
    return [f"images/{d}/{d}_{n:05d}.png" for d, n in zip(items["domain"], numbers, strict=True)]


def world_parameters(seed: int, n_per_class: int, size: int) -> dict:
    """What identifies a generated world (stored as ``world.json``)."""
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "n_per_class": n_per_class,
            "image_size": size, "domains": list(DOMAINS), "classnames": list(CLASSNAMES),
            "source_domains": list(SOURCE_DOMAINS), "target_domains": list(TARGET_DOMAINS),
            "split_ratios": list(DEFAULT_RATIOS)}


def _splits(n_per_class: int) -> np.ndarray:
    """Split name per image index: the first 64 % train, then 16 % val, 20 % test."""
    return np.repeat(SPLIT_NAMES, split_counts(n_per_class, DEFAULT_RATIOS))


def write_world(root: str | Path, seed: int = 0, n_per_class: int = DEFAULT_PER_CLASS,
                size: int = IMAGE_SIZE, workers: int | None = None,
                progress: bool = True) -> Path:
    """Generate the demo world into ``root`` unless it is already there; returns the manifest.

    An existing ``root`` is reused when its ``world.json`` matches these parameters; a
    different world there is an error. Generation happens in a temporary sibling folder that
    is renamed onto ``root`` when complete, so ``root`` is never half-written.
    """
    root = Path(root).expanduser()
    params = world_parameters(seed, n_per_class, size)
    meta_path, manifest = root / "world.json", root / "manifest.csv"
    if root.exists():
        if meta_path.is_file() and manifest.is_file():
            found = json.loads(meta_path.read_text())
            if found == params:
                return manifest
            raise ValueError(f"{meta_path} describes a different demo world ({found}); "
                             f"wanted {params}: pass another root or delete that folder")
        if any(root.iterdir()):
            raise ValueError(f"{root} exists, is not empty and holds no demo world "
                             f"(no {meta_path.name} + {manifest.name}); pass an empty folder")
        root.rmdir()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        drawn = sample(DOMAINS, n_per_class, seed, WORLD, size, workers, progress)
        items = drawn.items
        rel = file_names(items, seed)
        for path, pixels in zip(rel, drawn.pixels, strict=True):
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(tmp / path, compress_level=1)
        split = np.tile(_splits(n_per_class), len(items) // n_per_class)
        table = pd.DataFrame({"path": rel, "label": items["classname"],
                              "domain": items["domain"], "split": split,
                              "caption": items["caption"]})
        atomic_write_json(tmp / "world.json", params)
        atomic_write_csv(tmp / "manifest.csv", table)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def default_root(seed: int = 0, n_per_class: int = DEFAULT_PER_CLASS) -> Path:
    """Where ``demo_dataset`` keeps a world when no root is given."""
    return cache_dir() / "demo" / f"world-v{GENERATOR_VERSION}-seed{seed}-n{n_per_class}"


def demo_dataset(root: str | Path | None = None, seed: int = 0,
                 n_per_class: int = DEFAULT_PER_CLASS, progress: bool = True) -> ImageDataset:
    """The demo world as an ``ImageDataset`` (generated into ``root`` on first use).

    ``root`` defaults to ``default_root(seed, n_per_class)`` in the user cache. The dataset is
    read back through the regular ``manifest:`` layout; items carry domain, split (64/16/20
    per domain and class) and caption. ``description`` records the world's parameters.
    """
    root = default_root(seed, n_per_class) if root is None else Path(root).expanduser()
    manifest = write_world(root, seed=seed, n_per_class=n_per_class, progress=progress)
    dataset = load_dataset(f"manifest:{manifest}", classnames=list(CLASSNAMES))
    dataset.name = "demo"
    dataset.description.update({"layout": "demo", "world": world_parameters(
        seed, n_per_class, IMAGE_SIZE)})
    return dataset
