"""The shipped demo model ``activevlm-demo``: a tiny open_clip CLIP trained on the demo world.

Files inside the package: ``activevlm-demo.json`` (the open_clip config),
``activevlm-demo.safetensors`` (float16 weights, loaded into a float32 model) and
``MODEL_CARD.md``; ``activevlm/demo/train.py`` reproduces the weights from a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from activevlm import models  # names resolve on use: importing the demo loads no encoder

if TYPE_CHECKING:
    from activevlm.models import VLM

MODEL_NAME = "activevlm-demo"
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_PATH = PACKAGE_DIR / f"{MODEL_NAME}.json"
WEIGHTS_PATH = PACKAGE_DIR / f"{MODEL_NAME}.safetensors"
MODEL_CARD_PATH = PACKAGE_DIR / "MODEL_CARD.md"
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
"""open_clip's default (OpenAI) normalisation, which the config leaves in place."""


def register_demo_model() -> str:
    """Register the demo config with open_clip (idempotent); returns ``"activevlm-demo"``."""
    return models.register_model_config(CONFIG_PATH)


def demo_checkpoint() -> Path:
    """The shipped weights file, after registering the config; a clear error if missing."""
    register_demo_model()
    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(f"demo model weights missing: {WEIGHTS_PATH} (reinstall "
                                "activevlm or rerun python -m activevlm.demo.train)")
    return WEIGHTS_PATH


def load_demo_vlm(device: str | torch.device = "auto") -> VLM:
    """``load_vlm("activevlm-demo", checkpoint=<shipped weights>)``: offline, no download."""
    return models.load_vlm(MODEL_NAME, checkpoint=demo_checkpoint(), device=device)


def pixels_to_tensor(pixels) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` (numpy) -> normalised float32 ``[N, 3, H, W]``, exactly what the
    model's preprocess makes of a PIL image of the model's size."""
    x = torch.as_tensor(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std
