"""Train the demo model contrastively on the demo world's source domains; write the card.

    python -m activevlm.demo.train                       # reproduces the shipped weights
    python -m activevlm.demo.train --out /tmp/demo.safetensors --epochs 2   # a quick try

Draws captioned images of the source domains only (stream ``TRAIN``) once, optimises the
symmetric InfoNCE loss of CLIP (same-class pairs are positives) with AdamW, a slow warm-up and
a cosine schedule, and each epoch prints the mean loss and the zero-shot accuracy per
domain on a small held-out set. The weights are stored in float16 safetensors; the model
card is then computed from that file as loaded by ``load_vlm``. Same seed and thread
count -> same curve and table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from activevlm.demo.captions import PROMPT_TEMPLATES
from activevlm.demo.evaluate import (
    EVAL_PER_CLASS,
    EVAL_SEED,
    eval_sample,
    format_table,
    zero_shot_accuracy,
)
from activevlm.demo.model import (
    CONFIG_PATH,
    MODEL_CARD_PATH,
    MODEL_NAME,
    WEIGHTS_PATH,
    pixels_to_tensor,
    register_demo_model,
)
from activevlm.demo.render import DOMAINS
from activevlm.demo.world import (
    CLASSNAMES,
    GENERATOR_VERSION,
    SOURCE_DOMAINS,
    TARGET_DOMAINS,
    TRAIN,
    sample,
)
from activevlm.models import load_vlm
from activevlm.utils.io import atomic_path, atomic_write_text

DEFAULTS = {"seed": 0, "epochs": 20, "per_class": 100, "batch_size": 128, "lr": 2e-3,
            "warmup_steps": 200, "plain_fraction": 0.5, "weight_decay": 0.05, "threads": 2}


def infonce(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
            labels: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs ``[B, D] x [B, D] -> scalar`` whose positives
    are all pairs of the same class (UniCL): captions of one class in a batch are not
    pushed apart, so a small batch of 25 classes has no false negatives."""
    logits = logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def contrastive_step(model: torch.nn.Module, tokenizer, opt: torch.optim.Optimizer,
                     sched, pixels: torch.Tensor, texts: list[str],
                     labels: torch.Tensor) -> float:
    """One optimiser step of :func:`infonce` on ``pixels [B, 3, H, W]`` and their ``texts``;
    the learnable scale is kept <= 100 as in CLIP. Returns the loss."""
    loss = infonce(model.encode_image(pixels), model.encode_text(tokenizer(texts)),
                   model.logit_scale.exp(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def train(seed: int, epochs: int, per_class: int, batch_size: int, lr: float,
          warmup_steps: int, plain_fraction: float, weight_decay: float,
          threads: int) -> tuple[torch.nn.Module, list[dict]]:
    """Train from scratch; returns the model and one curve row per epoch."""
    register_demo_model()
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    # Captions use ~100 of the 49408 tokens: the token embedding stays at its seeded random
    # init (a fixed code per token), which keeps the optimiser small and fast.
    model.token_embedding.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    rest = [p for p in trained if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr)
    data = sample(SOURCE_DOMAINS, per_class, seed, TRAIN, workers=threads, progress=True)
    pixels = pixels_to_tensor(data.pixels)
    labels = torch.tensor(data.items["label"].to_numpy())
    captions = data.items["caption"].tolist()
    steps_per_epoch = math.ceil(len(captions) / batch_size)
    total = epochs * steps_per_epoch
    # A slow warm-up: at a high learning rate both random towers first collapse to one point.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup_steps)
        * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    monitor = eval_sample(n_per_class=8, seed=EVAL_SEED + 1)
    gen = torch.Generator().manual_seed(seed)
    text_rng = np.random.default_rng(seed)
    curves = []
    for epoch in range(epochs):
        t0 = time.time()
        order = torch.randperm(len(captions), generator=gen)
        model.train()
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            texts = [PROMPT_TEMPLATES[int(text_rng.integers(len(PROMPT_TEMPLATES)))].format(
                CLASSNAMES[int(labels[i])]) if text_rng.random() < plain_fraction
                else captions[i] for i in idx.tolist()]
            losses.append(contrastive_step(model, tokenizer, opt, sched, pixels[idx], texts,
                                           labels[idx]))
        model.eval()
        acc = zero_shot_accuracy(model.encode_image,
                                 lambda texts: model.encode_text(tokenizer(texts)), monitor)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "logit_scale": float(model.logit_scale.detach().exp()), "seconds": time.time() - t0,
               **{d: acc[d] for d in DOMAINS}}
        curves.append(row)
        print(f"epoch {row['epoch']:2d}  loss {row['loss']:.3f}  scale {row['logit_scale']:5.1f}"
              "  " + "  ".join(f"{d} {100 * acc[d]:5.1f}" for d in DOMAINS)
              + f"  ({row['seconds']:.0f} s)", flush=True)
    return model, curves


def save_weights(model: torch.nn.Module, path: Path) -> str:
    """Write the state dict as float16 safetensors (atomically); returns its SHA-256."""
    tensors = {k: v.detach().to(torch.float16).contiguous()
               for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "model": MODEL_NAME})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_card(args: dict, curves: list[dict], table: dict[str, float], sha256: str,
               weights: Path, minutes: float) -> str:
    """The Markdown model card."""
    curve_rows = "\n".join(
        f"| {r['epoch']} | {r['loss']:.3f} | "
        + " | ".join(f"{100 * r[d]:.1f}" for d in DOMAINS) + " |" for r in curves)
    return f"""# Model card: {MODEL_NAME}

A tiny open_clip CLIP (a small timm CNN image tower) trained from scratch, contrastively,
on the generated demo world of activevlm (`activevlm.demo`). It exists so that activevlm
runs offline with real domain shift; it knows nothing beyond the {len(CLASSNAMES)} demo shapes.

## Configuration
`activevlm/demo/{CONFIG_PATH.name}` (open_clip config; OpenAI image normalisation,
`SimpleTokenizer`, context length 24):

```json
{json.dumps(json.loads(CONFIG_PATH.read_text()), indent=2)}
```

Weights: `activevlm/demo/{weights.name}`, float16 safetensors ({weights.stat().st_size / 1e6:.1f}
MB), loaded into a float32 model.
SHA-256: `{sha256}`

## Training
- Data: demo world generator v{GENERATOR_VERSION} (`activevlm.demo.world`),
  {len(CLASSNAMES)} classes, source domains {", ".join(SOURCE_DOMAINS)} only
  ({", ".join(TARGET_DOMAINS)} held out), 64x64 RGB: {args['per_class']} images per class
  and source domain (stream TRAIN, seed {args['seed']}), drawn once and reused
  every epoch. Each time an image is used its text is,
  with probability {args['plain_fraction']}, a class prompt ({list(PROMPT_TEMPLATES)}), else
  its own caption (11 templates over colour, size, position, background and style words).
- Objective: symmetric InfoNCE (CLIP loss) with learnable temperature (scale <= 100), whose
  positives are all pairs of the same class in the batch (UniCL-style targets). The token
  embedding stays at its seeded random init (captions use ~100 tokens).
- Optimiser: AdamW, lr {args['lr']}, weight decay {args['weight_decay']} (matrices only),
  batch {args['batch_size']}, {args['epochs']} epochs, linear warm-up over
  {args['warmup_steps']} steps then cosine.
- Seed {args['seed']}, {args['threads']} torch threads, {minutes:.1f} min of wall time on a
  shared 2-core CPU. Reproduce: `python -m activevlm.demo.train` (same seed and thread
  count -> the same curve and table; two such runs matched to every printed digit, though
  their float16 files were not byte-identical).

## Zero-shot accuracy (held-out generated images)
{EVAL_PER_CLASS} images per class and domain from the EVAL stream, seed {EVAL_SEED}
(`activevlm.demo.evaluate.eval_sample()`), class prompts {list(PROMPT_TEMPLATES)}
(ensemble of normalised text embeddings), weights as loaded by
`load_vlm("{MODEL_NAME}")`. Chance is {100 / len(CLASSNAMES):.1f} %.

{format_table(table, SOURCE_DOMAINS)}

## Training curve
Zero-shot accuracy (%) on a small monitor set (8 per class and domain, seed {EVAL_SEED + 1}).

| epoch | loss | {" | ".join(DOMAINS)} |
|---|---|{"---|" * len(DOMAINS)}
{curve_rows}

## Intended use and limits
Demo, tests and CI benchmarks of activevlm only. The target domains are wrong often enough
that labels have something to fix; the model is not meant for any real image.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="weights file")
    parser.add_argument("--card", type=Path, default=None,
                        help=f"model card to write (default: {MODEL_CARD_PATH} when --out is "
                             "the shipped weights file, else none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    params = {k: getattr(args, k) for k in DEFAULTS}
    model, curves = train(**params)
    minutes = (time.time() - t0) / 60
    sha = save_weights(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, sha256 {sha})")
    vlm = load_vlm(MODEL_NAME, checkpoint=args.out, device="cpu")
    table = zero_shot_accuracy(vlm.encode_image, vlm.encode_text, eval_sample())
    print(format_table(table, SOURCE_DOMAINS))
    card = args.card or (MODEL_CARD_PATH if args.out.resolve() == WEIGHTS_PATH else None)
    if card is not None:
        atomic_write_text(card, model_card(params, curves, table, sha, args.out, minutes))
        print(f"wrote {card}")


if __name__ == "__main__":
    main()
