"""Deterministic train/val/test splits, stratified by domain and class."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_RATIOS = (0.64, 0.16, 0.20)


def parse_ratios(ratios: Sequence[float] | str) -> tuple[float, float, float]:
    """Three non-negative train/val/test proportions, normalised to sum to 1.

    Accepts a sequence or a string such as ``"64/16/20"`` or ``"0.7,0.1,0.2"``.
    """
    values = ratios.replace("/", ",").split(",") if isinstance(ratios, str) else list(ratios)
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"split ratios must be three numbers (train, val, test); "
                         f"got {ratios!r}") from None
    if len(numbers) != 3 or any(not math.isfinite(v) or v < 0 for v in numbers) \
            or sum(numbers) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers (train, val, test) "
                         f"with a positive sum; got {ratios!r}")
    total = sum(numbers)
    return (numbers[0] / total, numbers[1] / total, numbers[2] / total)


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``ratios`` (summing to 1) with largest remainders.

    Each count is within 1 of ``n * ratio`` and the counts sum to ``n``; ties in the
    remainder go to the earlier split.
    """
    exact = [n * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(ratios)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts


def _group_seed(seed: int, domain: str | None, label: int) -> list[int]:
    return [seed, zlib.crc32((domain or "").encode("utf-8")), label + 1]


def assign_splits(items: pd.DataFrame, ratios: Sequence[float], seed: int) -> pd.Series:
    """A split name per row, stratified by (``domain``, ``label``).

    Within each group the rows are sorted by ``sample_id`` and shuffled by a generator seeded
    from ``(seed, crc32(domain), label)``, so a group's split depends only on its own files
    and the seed, never on listing order or on other groups. Returns a Series aligned with
    ``items.index``.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"split seed must be a non-negative integer; got {seed!r}")
    out = pd.Series(index=items.index, dtype=object)
    domains = items["domain"].where(items["domain"].notna(), "")
    for (domain, label), group in items.groupby([domains, items["label"]], sort=True):
        ids = group["sample_id"].sort_values(kind="stable")
        rng = np.random.default_rng(_group_seed(int(seed), domain, int(label)))
        shuffled = ids.index[rng.permutation(len(ids))]
        names = np.repeat(SPLIT_NAMES, split_counts(len(ids), ratios))
        out.loc[shuffled] = names
    return out


def split_items(items: pd.DataFrame, name: str, split: bool,
                ratios: Sequence[float] | str | None, seed: int | None) -> dict:
    """Give ``items`` a ``split`` column when ``split`` (ratios default to
    :data:`DEFAULT_RATIOS`, seed to 0) and return what the dataset description records;
    ``ratios``/``seed`` without ``split`` are refused, naming the layout ``name``."""
    if not split:
        if ratios is not None or seed is not None:
            raise ValueError(f"{name}: options ratios/seed need split=True")
        return {}
    parsed = parse_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    split_seed = 0 if seed is None else int(seed)
    items["split"] = assign_splits(items, parsed, split_seed)
    return {"split_seed": split_seed, "split_ratios": list(parsed)}
