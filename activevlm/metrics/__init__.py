from activevlm.metrics.calibration import (  # classification and calibration
    accuracy,
    brier,
    calibration_summary,
    ece,
    nll,
    reliability_curve,
)
from activevlm.metrics.failure import (  # failure prediction (ViLU and baselines)
    aupr_error,
    aurc,
    auroc,
    baseline_confidences,
    fpr_at_tpr,
    risk_coverage_curve,
)

__all__ = [
    "accuracy", "brier", "calibration_summary", "ece", "nll", "reliability_curve",
    "aupr_error", "aurc", "auroc", "baseline_confidences", "fpr_at_tpr", "risk_coverage_curve",
]
