"""Write a model as an open_clip ``local-dir:`` folder, loadable with
``load_vlm("local-dir:<folder>")`` with its own preprocessing (mean, std, size)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from activevlm.utils.io import atomic_path, atomic_write_json

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def save_local_dir(model: nn.Module, model_cfg: dict, preprocess_cfg: dict,
                   out: str | Path) -> Path:
    """Write ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and the weights
    (``open_clip_model.safetensors``, written first, both atomically) into ``out``; returns
    ``out``. A folder holding both files is complete."""
    out = Path(out)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_json(out / CONFIG_FILE, {"model_cfg": model_cfg,
                                          "preprocess_cfg": preprocess_cfg})
    return out


def is_local_dir(path: str | Path) -> bool:
    """True when ``path`` holds a complete folder written by :func:`save_local_dir`."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
