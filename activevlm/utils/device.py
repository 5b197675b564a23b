"""Device selection: every GPU path falls back to the CPU."""

from __future__ import annotations

import torch

from activevlm.utils.errors import ConfigError


def parse_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``; a name torch does not know (``"gpu9"``) is a
    :class:`ConfigError` naming ``name`` and the value."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"{name} {str(device)!r} is not a device; use auto, cpu, cuda, "
                          "cuda:N (N a GPU index) or mps") from e


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else is validated."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} requested but this machine has "
                         f"{torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
    return dev
