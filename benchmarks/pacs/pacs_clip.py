"""A tiny CLIP trained contrastively on PACS source domains, cached outside the repository,
and the PACS pool it embeds.

    python benchmarks/pacs/pacs_clip.py --data ../shared/data/pacs [--seed 0]

The model is ``activevlm-pacs`` (``activevlm-pacs.json`` beside this file: the demo
architecture, a timm ``test_resnet`` image tower at 64x64 and a 2-layer text tower). It is
trained from scratch on the train split of the source domains (photo and art_painting by
default; the 96x96 images are resized to 64x64) with the demo's UniCL-style InfoNCE
(:func:`activevlm.demo.train.contrastive_step`), AdamW, warm-up and cosine. Each image's
text is, with probability ``plain_fraction``, a domain-free class prompt, else a caption naming its
domain ("a painting of a horse."). Weights and the pool live under
``$XDG_CACHE_HOME/activevlm/pacs/<key>/`` (default ``~/.cache``), ``key`` hashing the
training settings, the model config and the list of training files: PACS is not ours to
ship, nor is anything derived from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from rich.progress import track
from safetensors.torch import save_file

from activevlm.data import ImageDataset, load_dataset
from activevlm.demo.train import contrastive_step
from activevlm.models import load_vlm
from activevlm.models.registry import register_model_config
from activevlm.utils.io import atomic_path, atomic_write_json
from activevlm.utils.paths import cache_dir

CONFIG_PATH = Path(__file__).resolve().parent / "activevlm-pacs.json"
MODEL_NAME = CONFIG_PATH.stem
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pacs"
SOURCE_DOMAINS = ("photo", "art_painting")
TARGET_DOMAINS = ("cartoon", "sketch")
DOMAIN_WORDS = {"photo": "photo", "art_painting": "painting", "cartoon": "cartoon",
                "sketch": "sketch"}
PROMPTS = ("a picture of a {}.", "an image of a {}.", "a {}.")
"""Domain-free class prompts: used in training and as the zero-shot prompt ensemble."""
CAPTIONS = ("a {d} of a {c}.", "a {d} of the {c}.", "a {c} in a {d}.")
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "training.json"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that changes the trained weights (part of the cache key)."""

    seed: int = 0
    source_domains: tuple[str, ...] = SOURCE_DOMAINS
    split: str = "train"
    epochs: int = 25
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    plain_fraction: float = 0.5
    weight_decay: float = 0.05
    threads: int = 1


def register_pacs_model() -> str:
    """Register ``activevlm-pacs.json`` with open_clip (idempotent); returns its name."""
    return register_model_config(CONFIG_PATH)


def pacs_dataset(data: str | Path = DEFAULT_DATA) -> ImageDataset:
    """``load_dataset("pacs:<data>")`` with its deterministic 64/16/20 split (seed 0)."""
    data = Path(data).expanduser()
    if not data.exists():
        raise FileNotFoundError(f"PACS not found at {data} (expected the folder holding "
                                "PACS/<domain>/<class>/; see benchmarks/pacs/README.md)")
    return load_dataset(f"pacs:{data}")


def training_items(dataset: ImageDataset, settings: TrainSettings):
    """The rows of ``dataset.items`` the model is trained on, in path order."""
    items = dataset.items
    keep = items["domain"].isin(settings.source_domains) & (items["split"] == settings.split)
    if not keep.any():
        raise ValueError(f"PACS {dataset.root}: no items of domains {settings.source_domains} "
                         f"in split {settings.split!r}")
    return items[keep].reset_index(drop=True)


def cache_key(settings: TrainSettings, sample_ids: list[str]) -> str:
    """SHA-256 (16 hex) over the settings, the model config and the training file list."""
    blob = json.dumps({"settings": asdict(settings), "config": json.loads(CONFIG_PATH.read_text()),
                       "files": sorted(sample_ids)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_dir(dataset: ImageDataset, settings: TrainSettings) -> Path:
    """``<cache>/pacs/<model>-seed<k>-<key>``: where the weights and the pool are kept."""
    ids = training_items(dataset, settings)["sample_id"].tolist()
    return cache_dir() / "pacs" / f"{MODEL_NAME}-seed{settings.seed}-{cache_key(settings, ids)}"


def load_pixels(paths: list[str], transform) -> torch.Tensor:
    """Preprocessed images ``[N, 3, 64, 64]`` (the model's own eval transform)."""
    out = []
    for p in track(paths, description="reading images", transient=True):
        with Image.open(p) as image:
            out.append(transform(image.convert("RGB")))
    return torch.stack(out)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 6) -> torch.Tensor:
    """Random horizontal flips and translations (reflect-padded crops) of ``[B, 3, H, W]``."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_clip(dataset: ImageDataset, settings: TrainSettings, log=print
               ) -> tuple[torch.nn.Module, list[dict]]:
    """Train ``activevlm-pacs`` from scratch; returns the model and one curve row per epoch
    (mean loss, learning-rate scale, seconds). Same settings and threads -> same model."""
    register_pacs_model()
    torch.manual_seed(settings.seed)
    model, _, transform = open_clip.create_model_and_transforms(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    model.token_embedding.requires_grad_(False)  # captions use a few dozen tokens
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [p for p in trained if p.ndim >= 2], "weight_decay": settings.weight_decay},
         {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}], lr=settings.lr)
    items = training_items(dataset, settings)
    pixels = load_pixels(items["path"].tolist(), transform)
    labels = torch.tensor(items["label"].to_numpy())
    names = [c.replace("_", " ") for c in dataset.classnames]
    domains = items["domain"].tolist()
    steps_per_epoch = math.ceil(len(items) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / settings.warmup_steps)
        * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    curve = []
    for epoch in range(settings.epochs):
        t0 = time.time()
        model.train()
        losses = []
        order = torch.randperm(len(items), generator=gen)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size].tolist()
            texts = [PROMPTS[rng.integers(len(PROMPTS))].format(names[labels[i]])
                     if rng.random() < settings.plain_fraction else
                     CAPTIONS[rng.integers(len(CAPTIONS))].format(
                         d=DOMAIN_WORDS[domains[i]], c=names[labels[i]]) for i in idx]
            losses.append(contrastive_step(model, tokenizer, opt, sched,
                                           augment(pixels[idx], gen), texts, labels[idx]))
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "logit_scale": float(model.logit_scale.detach().exp()),
               "seconds": round(time.time() - t0, 2)}
        curve.append(row)
        log(f"epoch {row['epoch']:2d}  loss {row['loss']:.3f}  scale {row['logit_scale']:5.1f}"
            f"  ({row['seconds']:.1f} s)")
    model.eval()
    return model, curve


def trained_checkpoint(dataset: ImageDataset, settings: TrainSettings = TrainSettings(),
                       log=print) -> Path:
    """The cached weights for ``settings`` (trained now if absent); returns the file."""
    folder = model_dir(dataset, settings)
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        return weights
    log(f"training {MODEL_NAME} (seed {settings.seed}) on {', '.join(settings.source_domains)}"
        f" -> {folder}")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        t0 = time.time()
        model, curve = train_clip(dataset, settings, log=log)
        minutes = (time.time() - t0) / 60
    finally:
        torch.set_num_threads(threads)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model": MODEL_NAME})
    atomic_write_json(folder / RECORD_FILE, {"settings": asdict(settings), "minutes": minutes,
                                             "curve": curve, "data": str(dataset.root)})
    return weights


def pacs_pool(dataset: ImageDataset, settings: TrainSettings = TrainSettings(), *,
              device: str = "cpu", progress: bool = True, log=print):
    """All of PACS embedded by the model trained with ``settings`` (cached beside it)."""
    from activevlm.pool import embed_dataset

    checkpoint = trained_checkpoint(dataset, settings, log=log)
    register_pacs_model()
    vlm = load_vlm(MODEL_NAME, checkpoint=checkpoint, device=device)
    return embed_dataset(dataset, vlm, checkpoint.parent / "pool", batch_size=256,
                         templates=list(PROMPTS), progress=progress)


def parse_settings(argv: list[str] | None, description: str) -> tuple[Path, TrainSettings]:
    """``(--data, TrainSettings)`` from the command line: one option per scalar setting."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    for key, value in asdict(TrainSettings()).items():
        if not isinstance(value, tuple):
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    return args.data, TrainSettings(**{k: getattr(args, k) for k in asdict(TrainSettings())
                                       if hasattr(args, k)})


def main(argv: list[str] | None = None) -> None:
    data, settings = parse_settings(argv, __doc__.splitlines()[0])
    pool = pacs_pool(pacs_dataset(data), settings)
    print(f"pool {pool.path}")


if __name__ == "__main__":
    main()
