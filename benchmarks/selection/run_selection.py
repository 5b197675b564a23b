"""Run the selection benchmark of benchmarks/selection/PROTOCOL.md (issue 23) for one world
and one fine-tuning setting; resumable cell by cell.

    python benchmarks/selection/run_selection.py --world demo --setting current \
        --seeds 0 1 2 3 4 5 6 7 --out OUT
    python benchmarks/selection/run_selection.py --world pacs-lit --setting realistic \
        --seeds 0 1 2 3 4 --out OUT

Worlds: ``demo`` (4 rounds of 25 labels), ``demo-100`` (4 rounds of 100), ``pacs`` and
``pacs-lit`` (4 rounds of 25; seed k trains model k, cached, and drives the loop).
Settings: ``current`` (fine-tuning early-stops on the target's labelled val split) and
``realistic`` (no labelled target data: early stopping on a fifth of the acquired labels).
Writes ``OUT/<world>-<setting>/results.parquet`` (all seeds) beside the run folders.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pandas as pd
import torch

from activevlm.bench import run_grid
from activevlm.utils.io import atomic_write_parquet

BENCH = Path(__file__).resolve().parents[1]

STRATEGIES: list = [
    "random-untargeted",
    "random-targeted",
    "margin-targeted",
    "bayes-margin-targeted",
    # PCB (Bang et al. 2024): margin, round-robin over the model's predicted classes
    {"name": "pcb-targeted", "strategy": "margin-targeted",
     "select": {"batch": {"class_balanced": True}}},
    "tcm-targeted",
    "auto-targeted",
    {"name": "auto-balanced-targeted", "strategy": "auto-targeted",
     "select": {"batch": {"class_balanced": True}}},
]
CANDIDATES = ("auto-targeted", "auto-balanced-targeted")
"""The strategies the protocol's rule may make the default."""

LOOP = {
    "rounds": 4, "test_split": "test", "posterior_split": "train",
    "select": {"budget": 25, "pool_split": "train", "target_split": "val", "n_draws": 50,
               "n_targets": 128},
    "finetune": {"max_epochs": 30, "patience": 5},
    "refit": {"mode": "recentre+update"},
}
WORLDS = {
    "demo": {"targets": ["clipart"], "posterior_domains": ["product", "photo"], "budget": 25},
    "demo-100": {"targets": ["clipart"], "posterior_domains": ["product", "photo"],
                 "budget": 100},
    "pacs": {"targets": ["cartoon", "sketch"], "posterior_domains": ["photo", "art_painting"],
             "budget": 25},
    "pacs-lit": {"targets": ["cartoon", "sketch"],
                 "posterior_domains": ["photo", "art_painting"], "budget": 25},
}
SETTINGS = {"current": "val", "realistic": None}
"""``val_split`` per setting: the target's labelled val split, or none."""


def grid_config(world: str, setting: str, pool: str, seeds: list[int]) -> dict:
    """The ``run_grid`` config of one world and setting over ``pool`` ("demo" or a path)."""
    spec = WORLDS[world]
    loop = copy.deepcopy(LOOP)
    loop["val_split"] = SETTINGS[setting]
    loop["posterior_domains"] = spec["posterior_domains"]
    loop["select"]["budget"] = spec["budget"]
    return {"name": world, "seeds": seeds, "strategies": copy.deepcopy(STRATEGIES),
            "loop": loop,
            "datasets": [{"name": world, "pool": pool, "targets": spec["targets"]}]}


def pool_for_seed(world: str, seed: int) -> str:
    """The cached PACS pool of the model trained with ``seed`` (trained now if absent)."""
    sys.path.insert(0, str(BENCH / "pacs"))
    sys.path.insert(0, str(BENCH / "pacs_lit"))
    from pacs_clip import TrainSettings, pacs_dataset, pacs_pool

    dataset = pacs_dataset()
    if world == "pacs":
        return str(pacs_pool(dataset, TrainSettings(seed=seed, threads=1)).path)
    from lit_model import TrainSettings as LitSettings
    from lit_model import lit_pool

    return str(lit_pool(dataset, LitSettings(seed=seed, threads=1)).path)


def run(world: str, setting: str, seeds: list[int], out: Path, progress: bool) -> Path:
    """Every cell of ``world``/``setting``/``seeds``; returns the combined results file."""
    folder = out / f"{world}-{setting}"
    if world.startswith("demo"):
        files = [run_grid(grid_config(world, setting, "demo", seeds), folder,
                          progress=progress)]
    else:
        files = [run_grid(grid_config(world, setting, pool_for_seed(world, s), [s]),
                          folder / f"seed{s}", progress=progress) for s in seeds]
    results = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    results["world"] = f"{world}-{setting}"
    path = folder / "results.parquet"
    atomic_write_parquet(path, results)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), required=True)
    parser.add_argument("--setting", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(run(args.world, args.setting, args.seeds, args.out, not args.no_progress))


if __name__ == "__main__":
    main()
