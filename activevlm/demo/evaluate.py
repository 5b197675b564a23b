"""Zero-shot accuracy of a CLIP-style model on held-out demo images, per domain.

Protocol (the model card's table): ``EVAL_PER_CLASS`` images per class and domain drawn from
the ``EVAL`` stream with ``EVAL_SEED``; each class is the normalised mean of the normalised
text embeddings of ``PROMPT_TEMPLATES``; an image goes to the class of highest cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from activevlm.demo.captions import PROMPT_TEMPLATES
from activevlm.demo.model import pixels_to_tensor
from activevlm.demo.render import DOMAINS
from activevlm.demo.world import CLASSNAMES, EVAL, Sample, sample

EVAL_SEED = 0
EVAL_PER_CLASS = 30


def eval_sample(n_per_class: int = EVAL_PER_CLASS, seed: int = EVAL_SEED,
                domains: Sequence[str] = DOMAINS, workers: int = 0) -> Sample:
    """The held-out evaluation images (never part of the world or of training)."""
    return sample(domains, n_per_class, seed, EVAL, workers=workers)


@torch.no_grad()
def class_embeddings(encode_text: Callable[[list[str]], torch.Tensor],
                     classnames: Sequence[str] = CLASSNAMES,
                     templates: Sequence[str] = PROMPT_TEMPLATES) -> torch.Tensor:
    """Unit class embeddings ``[C, D]``: prompt-ensemble of normalised text embeddings."""
    prompts = [t.format(c) for c in classnames for t in templates]
    emb = F.normalize(encode_text(prompts).float(), dim=-1)
    return F.normalize(emb.view(len(classnames), len(templates), -1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(encode_image: Callable[[torch.Tensor], torch.Tensor],
                       encode_text: Callable[[list[str]], torch.Tensor], data: Sample,
                       batch_size: int = 500) -> dict[str, float]:
    """Accuracy (in [0, 1]) per domain of ``data``, plus ``"all"``.

    ``encode_image``: normalised pixels ``[B, 3, H, W]`` -> embeddings ``[B, D]``;
    ``encode_text``: list of B strings -> ``[B, D]``.
    """
    classes = class_embeddings(encode_text)
    preds = []
    for start in range(0, len(data.pixels), batch_size):
        x = pixels_to_tensor(data.pixels[start:start + batch_size])
        preds.append((F.normalize(encode_image(x).float(), dim=-1) @ classes.T).argmax(1))
    correct = torch.cat(preds).numpy() == data.items["label"].to_numpy()
    table = {d: float(correct[(data.items["domain"] == d).to_numpy()].mean())
             for d in data.items["domain"].unique()}
    table["all"] = float(correct.mean())
    return table


def format_table(table: dict[str, float], sources: Sequence[str]) -> str:
    """A Markdown table ``domain | role | zero-shot accuracy``."""
    rows = ["| domain | role | zero-shot accuracy |", "|---|---|---|"]
    for domain, acc in table.items():
        role = "all" if domain == "all" else "source" if domain in sources else "target"
        rows.append(f"| {domain} | {role} | {100 * acc:.1f} % |")
    return "\n".join(rows)


def accuracy_gap(a: dict[str, float], b: dict[str, float]) -> float:
    """Largest absolute per-domain difference between two tables, in percentage points."""
    return max(100 * abs(a[k] - b[k]) for k in np.intersect1d(list(a), list(b)))
