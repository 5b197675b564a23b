"""Feeding images to the encoder: a torch Dataset that never raises on a bad image.

Unreadable inputs (truncated JPEGs, non-images, missing files) come back as an error string
instead of a tensor; the collate keeps the readable ones and reports the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# What PIL and the filesystem raise for inputs we should skip and record, not die on.
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class ImageReader(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, pixels [3, H, W] | None, error | None)``."""

    def __init__(self, dataset, preprocess: Callable[[Image.Image], torch.Tensor]):
        self.dataset = dataset
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.dataset.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = self.dataset.load_image(i)
            return i, self.preprocess(image), None
        except UNREADABLE as e:
            return i, None, f"{type(e).__name__}: {e}"


@dataclass
class Batch:
    """Positions asked for, the readable ones with their pixels ``[b, 3, H, W]``, failures."""

    rows: np.ndarray
    ok_rows: np.ndarray
    pixels: torch.Tensor | None
    failed: list[tuple[int, str]]


def collate(samples: Sequence[tuple[int, torch.Tensor | None, str | None]]) -> Batch:
    ok = [(i, x) for i, x, _ in samples if x is not None]
    return Batch(
        rows=np.array([i for i, _, _ in samples], dtype=np.int64),
        ok_rows=np.array([i for i, _ in ok], dtype=np.int64),
        pixels=torch.stack([x for _, x in ok]) if ok else None,
        failed=[(i, err) for i, x, err in samples if x is None],
    )
