"""Active-learning loops: simulated-oracle campaigns.

``run_loop(pool, LoopConfig(...), out_dir, seed)`` runs rounds of select -> oracle labels ->
fine-tune -> refit -> evaluate, resumable round by round (the fine-tune and refit step is
:func:`activevlm.runs.adapt_run`, which ``activevlm finetune`` applies to a run labelled by
people).
"""

from activevlm.loop.config import LoopConfig, Predictive
from activevlm.loop.evaluate import evaluate_model
from activevlm.loop.failure import failure_probabilities, msp_failure
from activevlm.loop.oracle import answer_queue
from activevlm.loop.simulate import TIMING_COLUMNS, batch_stats, read_metrics, run_loop

__all__ = [
    "TIMING_COLUMNS", "LoopConfig", "Predictive", "answer_queue", "batch_stats",
    "evaluate_model", "failure_probabilities", "msp_failure", "read_metrics", "run_loop",
]
