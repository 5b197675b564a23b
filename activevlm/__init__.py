"""activevlm: choose which unlabelled images to label next when adapting a CLIP/SigLIP model.

One import gives the workflow (``import activevlm as avl``)::

    pool = avl.demo_pool()                       # or avl.open_pool("pools/oh")
    posterior = avl.fit_pool_posterior(pool, split="train")
    state = avl.RunState.open_or_create("runs/x", str(pool.path), pool.model_id,
                                        pool.classnames)
    result = avl.select_round(pool, state, avl.SelectConfig(budget=50, target_domain="clipart"),
                              posterior=posterior)
    avl.import_labels(state, "export.json", set(pool.items["sample_id"]))
    adapted = avl.adapt_run(pool, state, base=posterior)   # fine-tune + refit

The names are thin re-exports of the library functions, imported on first use so that
``import activevlm`` stays cheap (no torch until a name needs it).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # pools and data
    "demo_pool": "activevlm.demo.pool",
    "open_pool": "activevlm.pool",
    "embed_dataset": "activevlm.pool",
    "load_dataset": "activevlm.data",
    "load_vlm": "activevlm.models",
    # posterior
    "fit_pool_posterior": "activevlm.bayes.from_pool",
    "BayesVLMPosterior": "activevlm.bayes.posterior",
    # selection and labels
    "RunState": "activevlm.runs",
    "SelectConfig": "activevlm.runs.select",
    "select_round": "activevlm.runs.select",
    "run_select": "activevlm.runs.session",
    "LabelStudioOptions": "activevlm.runs.queue",
    "import_labels": "activevlm.runs",
    # fine-tuning, evaluation, experiments
    "adapt_run": "activevlm.loop",
    "finetune_head": "activevlm.finetune",
    "FinetuneConfig": "activevlm.finetune",
    "RefitConfig": "activevlm.finetune",
    "evaluate_zeroshot": "activevlm.evaluation",
    "evaluate_model": "activevlm.loop",
    "LoopConfig": "activevlm.loop",
    "run_loop": "activevlm.loop",
    "plot_results": "activevlm.bench",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'activevlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
