"""Run directories: the state of one labelling campaign (rounds, labels, queues, the model
the next round selects with), one selection round, and the fine-tune/refit step.

Names load on first use (:mod:`activevlm.utils.lazy`): ``SelectConfig`` imports without torch.
"""

from activevlm.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["AdaptResult", "adapt_run", "labelled_rows"], "adapt"),
    "SelectConfig": "config",
    **dict.fromkeys(["Annotation", "LabelImport", "import_labels", "majority_labels",
                     "read_annotations"], "labels"),
    **dict.fromkeys(["LabelStudioOptions", "write_queue"], "queue"),
    **dict.fromkeys(["RunDir", "base_posterior", "load_posterior", "resolve_posterior",
                     "run_posterior", "save_posterior"], "rundir"),
    **dict.fromkeys(["SelectionResult", "head_fingerprint", "pool_index", "select_round",
                     "target_points"], "select"),
    **dict.fromkeys(["DEMO_TARGET_DOMAIN", "PendingItemsError", "default_fit_domains",
                     "run_select"], "session"),
    "RunState": "state",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
