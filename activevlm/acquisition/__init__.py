"""Acquisition: heuristics on joint posterior draws, streaming pool scoring, batch rules, and
the :class:`Strategy` that composes them into a selection.

Names load on first use (:mod:`activevlm.utils.lazy`), so the option types of
:mod:`activevlm.acquisition.options` import without torch or FAISS.
"""

from activevlm.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["kmeans_labels", "probcover", "probcover_delta", "typical_representatives",
                     "typicality", "typiclust"], "coverage"),
    **dict.fromkeys(["balance_by_class", "rank_diverse", "rank_stochastic", "rank_topk",
                     "select_batch", "take_without_duplicates"], "batch"),
    **dict.fromkeys(["PathwiseConditioning", "Pick", "curvature_scale"], "conditioning"),
    "entropy": "entropy",
    "epig_scores": "epig",
    **dict.fromkeys(["GreedyBatch", "greedy_batch"], "greedy"),
    **dict.fromkeys(["Heuristic", "get_heuristic", "list_heuristics", "register_heuristic"],
                    "heuristics"),
    "typical_greedy": "hybrid",
    **dict.fromkeys(["LabelConditioning", "LabelPick", "PseudoLabelBatch", "label_gradient",
                     "pseudo_label_batch"], "pseudo_label"),
    **dict.fromkeys(["STRATEGIES", "BatchOptions", "BatchRule", "Phase", "PhasedSpec",
                     "StrategySpec", "Weighting", "parse_strategy", "resolve_targeting"],
                    "options"),
    **dict.fromkeys(["map_probs", "score_pool"], "scoring"),
    **dict.fromkeys(["ray_scorer", "score_pool_ray"], "ray_scoring"),
    **dict.fromkeys(["BatchInputs", "RULES"], "rules"),
    **dict.fromkeys(["PhasedStrategy", "Selection", "SelectionProblem", "Strategy",
                     "make_strategy"], "strategy"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
