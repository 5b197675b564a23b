"""Acquisition: heuristics on joint posterior draws, streaming pool scoring, batch selection."""

from activevlm.acquisition.batch import (
    balance_by_class,
    rank_diverse,
    rank_stochastic,
    rank_topk,
    select_batch,
    take_without_duplicates,
)
from activevlm.acquisition.entropy import entropy
from activevlm.acquisition.epig import epig_scores
from activevlm.acquisition.exclusion import exclusion_mask
from activevlm.acquisition.heuristics import (
    Heuristic,
    get_heuristic,
    list_heuristics,
    register_heuristic,
)
from activevlm.acquisition.scoring import score_pool
from activevlm.bayes.draws import JointDraws

__all__ = [
    "Heuristic",
    "JointDraws",
    "balance_by_class",
    "entropy",
    "epig_scores",
    "exclusion_mask",
    "get_heuristic",
    "list_heuristics",
    "rank_diverse",
    "rank_stochastic",
    "rank_topk",
    "register_heuristic",
    "score_pool",
    "select_batch",
    "take_without_duplicates",
]
