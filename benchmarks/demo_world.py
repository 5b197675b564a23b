"""Per-domain zero-shot accuracy of the shipped demo model on held-out demo images.

    python benchmarks/demo_world.py [--per-class 30] [--seed 0] [--probe]

Prints one row per domain: role (source / held-out target), zero-shot accuracy now, the
model card's number, and with ``--probe`` a linear probe on the pre-projection image
activations (logistic regression, half the images to fit, half to test) — an upper
reference for what labels can fix in each domain.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from activevlm.demo.evaluate import EVAL_PER_CLASS, EVAL_SEED, eval_sample, zero_shot_accuracy
from activevlm.demo.model import MODEL_CARD_PATH, load_demo_vlm, pixels_to_tensor
from activevlm.demo.render import DOMAINS
from activevlm.demo.world import SOURCE_DOMAINS


def card_table() -> dict[str, float]:
    rows = re.findall(r"^\| (\w+) \| (?:source|target|all) \| ([\d.]+) % \|$",
                      MODEL_CARD_PATH.read_text(), flags=re.M)
    return {d: float(v) for d, v in rows}


def linear_probe(acts: np.ndarray, labels: np.ndarray, index: np.ndarray) -> float:
    """Test accuracy of a logistic regression fitted on the images with even index."""
    fit, test = index % 2 == 0, index % 2 == 1
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(acts[fit], labels[fit])
    return float((clf.predict(acts[test]) == labels[test]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=EVAL_PER_CLASS)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--probe", action="store_true", help="add the linear-probe column")
    args = parser.parse_args()

    t0 = time.time()
    data = eval_sample(args.per_class, args.seed)
    vlm = load_demo_vlm("auto")
    table = zero_shot_accuracy(vlm.encode_image, vlm.encode_text, data)
    card = card_table() if (args.per_class, args.seed) == (EVAL_PER_CLASS, EVAL_SEED) else {}
    probes = {}
    if args.probe:
        acts, _ = vlm.image_activations(pixels_to_tensor(data.pixels).to(vlm.device))
        acts = acts.float().cpu().numpy()
        labels, index = data.items["label"].to_numpy(), data.items["index"].to_numpy()
        for d in DOMAINS:
            rows = (data.items["domain"] == d).to_numpy()
            probes[d] = linear_probe(acts[rows], labels[rows], index[rows])

    out = Table(title=f"activevlm-demo zero-shot accuracy ({args.per_class} images per class "
                      f"and domain, seed {args.seed}, {vlm.device})")
    for column in ("domain", "role", "zero-shot %", "model card %",
                   *(["linear probe %"] if args.probe else [])):
        out.add_column(column, justify="left" if column in ("domain", "role") else "right")
    for d in [*DOMAINS, "all"]:
        role = "all" if d == "all" else "source" if d in SOURCE_DOMAINS else "target"
        row = [d, role, f"{100 * table[d]:.1f}", f"{card[d]:.1f}" if d in card else "-"]
        if args.probe:
            row.append(f"{100 * probes[d]:.1f}" if d in probes else "-")
        out.add_row(*row)
    Console().print(out)
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
