"""The ``activevlm`` command: thin Typer shells over library functions.

Each command group lives in its own module under ``activevlm/cli`` and is registered here.
"""

from __future__ import annotations

import os

import typer

# Pretrained tags must never hang on a hub lookup on offline machines; users with a network
# can still export HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(
    name="activevlm",
    help="Choose which unlabelled images to label next when adapting a CLIP/SigLIP model.",
    no_args_is_help=True,
    add_completion=False,
)

# --- command registration (one line per module) ---


if __name__ == "__main__":
    app()
