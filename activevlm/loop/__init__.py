"""Active-learning loops: simulated-oracle campaigns and the fine-tune/refit step of a run.

``run_loop(pool, LoopConfig(...), out_dir, seed)`` runs rounds of select -> oracle labels ->
fine-tune -> refit -> evaluate, resumable round by round; ``adapt_run`` is the fine-tune and
refit step that ``activevlm finetune --run DIR`` applies to a run labelled by people.
"""

from activevlm.loop.adapt import AdaptResult, adapt_run, base_posterior, labelled_rows
from activevlm.loop.config import LoopConfig, parse_strategy
from activevlm.loop.evaluate import evaluate_model
from activevlm.loop.failure import failure_probabilities, msp_failure
from activevlm.loop.oracle import answer_queue
from activevlm.loop.simulate import TIMING_COLUMNS, read_metrics, run_loop

__all__ = [
    "TIMING_COLUMNS", "AdaptResult", "LoopConfig", "adapt_run", "answer_queue",
    "base_posterior", "evaluate_model", "failure_probabilities", "labelled_rows",
    "msp_failure", "parse_strategy", "read_metrics", "run_loop",
]
