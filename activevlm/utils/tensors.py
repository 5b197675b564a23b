"""Small conversions shared by the numerical layers: array-likes to tensors and back, row
chunks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def to_tensor(x, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor on ``device``/``dtype`` from a tensor, ndarray, memmap or any array-like chunk
    (e.g. rows of a pool's ``ShardedArray``); no copy when nothing changes."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    return x.to(device=device, dtype=dtype)


def row_chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive row slices ``[0, size), [size, 2·size), ...`` covering ``n`` rows."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def to_numpy(x) -> np.ndarray:
    """A numpy array from a tensor (detached, on the CPU) or any array-like."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
