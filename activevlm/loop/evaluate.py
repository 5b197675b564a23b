"""Per-round test metrics of a loop: deterministic head and Bayesian predictive."""

from __future__ import annotations

import dataclasses

from activevlm.evaluation import predict_zeroshot, summarize
from activevlm.models.head import ProjectionHead

METRIC_NAMES = ("accuracy", "nll", "ece", "brier")


def evaluate_model(pool, head: ProjectionHead, posterior=None, *, domain=None,
                   split: str | None = "test", predictive: str = "probit",
                   seed: int = 0, device: str = "auto") -> dict:
    """Metrics of ``head`` (and ``posterior``) on the labelled ``domain``/``split`` items:
    ``n_test``, ``accuracy``, ``nll``, ``ece``, ``brier`` and ``bayes_<metric>`` (NaN-free;
    absent without a posterior). The posterior predictive is its own (its W*: the refitted
    head after a recentring refit, the old one with refit mode "none")."""
    view = dataclasses.replace(pool, head=head)
    table = summarize(predict_zeroshot(view, posterior, domain=domain, split=split,
                                       predictive=predictive, seed=seed, device=device))
    rows = table[table["domain"] == "all"].set_index("model")
    out = {"n_test": int(rows.loc["deterministic", "n"])}
    out.update({m: float(rows.loc["deterministic", m]) for m in METRIC_NAMES})
    if "bayesian" in rows.index:
        out.update({f"bayes_{m}": float(rows.loc["bayesian", m]) for m in METRIC_NAMES})
    return out
