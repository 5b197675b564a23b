"""Tiny generated pools for tests: random images, real embedding path, tiny open_clip configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from activevlm.data import ImageDataset
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import embed_dataset

CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
CLASSES = ["cat", "dog", "boat", "tree"]
SPLITS = ("train", "train", "train", "val", "test")


def toy_dataset(root: Path, domains=("photo", "sketch"), per: int = 5, captions: bool = True,
                seed: int = 0, splits: tuple[str, ...] = SPLITS,
                class_subset: list[int] | None = None) -> ImageDataset:
    """``per`` random 24x24 images per (domain, class); image ``i`` gets split
    ``splits[i % len(splits)]``. ``class_subset``: keep only those labels and record the subset
    (as the ImageNet-R/A layouts do)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, c in enumerate(CLASSES):
        for domain in domains:
            for i in range(per):
                path = root / domain / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
                rows.append({"sample_id": f"{domain}/{c}/{i}.png", "path": str(path),
                             "label": label, "domain": domain, "split": splits[i % len(splits)],
                             **({"caption": f"a {domain} of a {c}"} if captions else {})})
    items = pd.DataFrame(rows)
    if class_subset is not None:
        items = items[items["label"].isin(class_subset)]
    desc = {"layout": "toy"} | ({"class_subset": class_subset} if class_subset else {})
    return ImageDataset("toy", root, CLASSES, items, desc, class_subset)


def toy_pool(root: Path, config: str = "tiny-clip", **dataset_options):
    """Embed :func:`toy_dataset` under ``root/images`` into ``root/pool`` with a tiny config."""
    ds = toy_dataset(root / "images", **dataset_options)
    vlm = load_vlm(register_model_config(CONFIGS / f"{config}.json"), device="cpu")
    return embed_dataset(ds, vlm, root / "pool", batch_size=32, progress=False)
