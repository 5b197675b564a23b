"""Fine-tuning the projections on the labelled set, and refitting the posterior afterwards."""

from activevlm.finetune.projection import FinetuneConfig, FinetuneResult, finetune_head
from activevlm.finetune.refit import REFIT_MODES, RefitConfig, combine_factor, refit_posterior
from activevlm.finetune.split import stratified_split

__all__ = [
    "REFIT_MODES",
    "FinetuneConfig",
    "FinetuneResult",
    "RefitConfig",
    "combine_factor",
    "finetune_head",
    "refit_posterior",
    "stratified_split",
]
