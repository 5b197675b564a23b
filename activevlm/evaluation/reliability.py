"""Reliability diagrams: accuracy versus confidence per bin, one panel per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from activevlm.metrics.calibration import N_BINS, ece, reliability_curve
from activevlm.utils.io import atomic_path


def reliability_diagram(
    probs: dict[str, np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    n_bins: int = N_BINS,
    title: str | None = None,
) -> Path:
    """Save a PNG with one reliability panel per entry of ``probs`` (name -> ``[N, C]``).

    Bars: accuracy per equal-width confidence bin; the diagonal is perfect calibration; the
    lower strip shows the fraction of samples per bin. Returns ``path``.
    """
    if not probs:
        raise ValueError("probs is empty: nothing to plot")
    path = Path(path)
    # a bare Figure renders with Agg and leaves pyplot's global backend alone
    fig = Figure(figsize=(4 * len(probs), 5))
    axes = fig.subplots(2, len(probs), squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    for col, (name, p) in enumerate(probs.items()):
        curve = reliability_curve(p, labels, n_bins)
        top, bottom = axes[0, col], axes[1, col]
        top.bar(curve["bin_lower"], curve["accuracy"].fillna(0), width=width, align="edge",
                edgecolor="black", linewidth=0.5, label="accuracy")
        top.bar(curve["bin_lower"], (curve["confidence"] - curve["accuracy"]).fillna(0),
                bottom=curve["accuracy"].fillna(0), width=width, align="edge", color="red",
                alpha=0.3, label="gap")
        top.plot([0, 1], [0, 1], "k--", linewidth=1)
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
                title=f"{name}  (ECE {ece(p, labels, n_bins):.3f})")
        top.legend(loc="upper left", fontsize="small")
        bottom.bar(curve["bin_lower"], curve["count"] / curve["count"].sum(), width=width,
                   align="edge", color="gray")
        bottom.set(xlabel="confidence (max probability)", ylabel="fraction")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
