"""Reliability diagrams: accuracy versus confidence per bin, one panel per model (and domain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from activevlm.metrics.calibration import N_BINS, ece, reliability_curve
from activevlm.utils.io import atomic_path


def _panel(top, bottom, p: np.ndarray, labels: np.ndarray, n_bins: int, title: str) -> None:
    curve = reliability_curve(p, labels, n_bins)
    used = curve["count"] > 0
    width = 1.0 / n_bins
    centre = curve["bin_lower"] + width / 2
    top.bar(curve["bin_lower"][used], curve["accuracy"][used], width=width, align="edge",
            color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    top.vlines(centre[used], curve["accuracy"][used], curve["confidence"][used],
               color="tab:red", linewidth=2, label="gap to mean confidence")
    top.plot(centre[used], curve["confidence"][used], "_", color="tab:red", ms=8)
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
            title=f"{title}\nn={len(labels)}, ECE {ece(p, labels, n_bins):.3f}")
    top.legend(loc="upper left", fontsize="x-small")
    bottom.bar(curve["bin_lower"], curve["count"] / max(int(curve["count"].sum()), 1),
               width=width, align="edge", color="gray")
    bottom.set(xlabel="confidence (max probability)", ylabel="fraction")


def reliability_diagram(
    probs: dict[str, np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    n_bins: int = N_BINS,
    title: str | None = None,
    groups: np.ndarray | None = None,
) -> Path:
    """Save a PNG with one reliability panel per entry of ``probs`` (name -> ``[N, C]``).

    Bars: accuracy per equal-width confidence bin (empty bins left out); red lines run from
    each bar's top to the bin's mean confidence (the gap ECE averages); the diagonal is perfect
    calibration; the lower strip shows the fraction of samples per bin. ``groups [N]`` (e.g.
    the domain of each item): one row of panels for all items, then one per group. Returns
    ``path``.
    """
    if not probs:
        raise ValueError("probs is empty: nothing to plot")
    labels = np.asarray(labels)
    rows = [("all items" if groups is not None else None, np.ones(len(labels), dtype=bool))]
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups must be [N] like labels, got {groups.shape} and "
                             f"{labels.shape}")
        rows += [(str(g), groups == g) for g in dict.fromkeys(groups.tolist())]
    path = Path(path)
    # a bare Figure renders with Agg and leaves pyplot's global backend alone
    fig = Figure(figsize=(4 * len(probs), 5 * len(rows)), layout="constrained")
    axes = fig.subplots(2 * len(rows), len(probs), squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1] * len(rows)})
    for r, (group, mask) in enumerate(rows):
        for col, (name, p) in enumerate(probs.items()):
            head = name if group is None else f"{name}: {group}"
            _panel(axes[2 * r, col], axes[2 * r + 1, col], np.asarray(p)[mask], labels[mask],
                   n_bins, head)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
