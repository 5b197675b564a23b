"""ViLU failure prediction: a small head on cached embeddings that predicts when the zero-shot
model is wrong, its evaluation against confidence baselines, and its use for acquisition.

Acquisition: ``failure_scores(model, pool)`` gives failure probabilities ``[N]``, the
``external_scores`` of the registered heuristic ``"vilu"``; ``combine`` mixes them with EPIG.
"""

from activevlm.vilu.combine import failure_weighted, top_failure_mask, within_top_failures
from activevlm.vilu.estimator import ViLUModel
from activevlm.vilu.evaluate import (
    evaluate_failure_prediction,
    evaluate_on_pool,
    risk_coverage_plot,
)
from activevlm.vilu.model import ViLU, ViLUConfig
from activevlm.vilu.pool import (
    PoolFailureScores,
    failure_scores,
    fit_vilu_on_pool,
    pool_failure_scores,
)
from activevlm.vilu.train import (
    caption_correct,
    correctness_split,
    failure_weight,
    fit_vilu,
    zero_shot_correct,
)

load_vilu = ViLUModel.load

__all__ = [
    "PoolFailureScores", "ViLU", "ViLUConfig", "ViLUModel", "caption_correct",
    "evaluate_failure_prediction", "evaluate_on_pool", "failure_scores", "failure_weight",
    "failure_weighted",
    "correctness_split", "fit_vilu", "fit_vilu_on_pool", "load_vilu", "pool_failure_scores",
    "risk_coverage_plot", "top_failure_mask", "within_top_failures", "zero_shot_correct",
]
