"""Comparing failure predictors: one table row per method, and a risk–coverage plot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from activevlm.metrics.failure import FAILURE_METRICS, risk_coverage_curve
from activevlm.utils.io import atomic_path, atomic_write_parquet
from activevlm.vilu.pool import pool_failure_scores

METHOD_LABELS = {
    "vilu": "ViLU", "msp": "MSP", "entropy": "Entropy", "doctor": "DOCTOR",
    "bayesvlm_variance": "BayesVLM variance",
}


def evaluate_failure_prediction(correct, confidences: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row per method: ``method, n, failures, accuracy, auroc, fpr_at_95tpr, aupr_error,
    aurc``. ``correct [N]`` bool; each confidence ``[N]``, higher = more confident."""
    y = np.asarray(correct, dtype=bool)
    rows = []
    for name, conf in confidences.items():
        row = {"method": name, "n": int(y.size), "failures": int((~y).sum()),
               "accuracy": float(y.mean()) if y.size else float("nan")}
        row.update({metric: fn(y, conf) for metric, fn in FAILURE_METRICS.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def risk_coverage_plot(correct, confidences: Mapping[str, np.ndarray], path: str | Path,
                       title: str | None = None) -> Path:
    """Write a PNG of selective risk against coverage, one line per method (AURC in the
    legend), with the oracle (every failure ranked last) and random (the overall error rate)
    for reference; returns the path."""
    y = np.asarray(correct, dtype=bool)
    fig = Figure(figsize=(5.5, 4.0), dpi=120)  # no pyplot: leaves the user's backend alone
    ax = fig.subplots()
    for name, conf in confidences.items():
        coverage, risk = risk_coverage_curve(y, conf)
        ax.plot(coverage, risk, label=f"{METHOD_LABELS.get(name, name)} "
                                      f"(AURC {risk.mean():.3f})")
    coverage, risk = risk_coverage_curve(y, y.astype(float))
    ax.plot(coverage, risk, "k--", linewidth=1, label=f"oracle (AURC {risk.mean():.3f})")
    ax.axhline(1 - y.mean(), color="gray", linestyle=":", linewidth=1,
               label=f"random (AURC {1 - y.mean():.3f})")
    ax.set_xlabel("coverage")
    ax.set_ylabel("selective risk (error rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def evaluate_on_pool(
    model,
    pool,
    *,
    split: str | None = "test",
    domain: str | list[str] | None = None,
    posterior=None,
    out: str | Path | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """ViLU against MSP, entropy, DOCTOR (and BayesVLM variance with a ``posterior``) on the
    labelled pool items of ``split``/``domain``. With ``out``, also writes
    ``out/failure_eval.parquet`` and ``out/risk_coverage.png``."""
    captions = model.config.setting == "captions"
    idx = pool.indices(domain=domain, split=split, labelled=None if captions else True)
    if idx.size == 0:
        raise ValueError(f"pool {pool.path} has no {'' if captions else 'labelled '}items with "
                         f"split={split!r}, domain={domain!r}")
    scores = pool_failure_scores(model, pool, idx, posterior=posterior, device=device)
    table = evaluate_failure_prediction(scores.correct, scores.confidences)
    if out is not None:
        out = Path(out)
        atomic_write_parquet(out / "failure_eval.parquet", table)
        domains = [domain] if isinstance(domain, str) else list(domain or [])
        where = f"{split or 'all'} split" + (f", {', '.join(domains)}" if domains else "")
        dataset = pool.manifest.get("dataset", {}).get("name", Path(pool.path).name)
        risk_coverage_plot(scores.correct, scores.confidences, out / "risk_coverage.png",
                           title=f"{dataset} ({pool.model_id.split('@')[0]}): {where}, "
                                 f"n={len(scores.correct)}")
    return table
