"""Evaluation of zero-shot and adapted models: metric tables and reliability diagrams."""

from activevlm.evaluation.reliability import reliability_diagram
from activevlm.evaluation.zeroshot import (
    ZeroShotPredictions,
    evaluate_zeroshot,
    predict_zeroshot,
    summarize,
)

__all__ = [
    "ZeroShotPredictions", "evaluate_zeroshot", "predict_zeroshot",
    "reliability_diagram", "summarize",
]
