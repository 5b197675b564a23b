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

import importlib

__version__ = "0.1.0"

# public name -> the module (below activevlm) that defines it
_EXPORTS = {
    # pools and data
    "demo_pool": "demo.pool",
    **dict.fromkeys(["open_pool", "embed_dataset"], "pool"),
    "load_dataset": "data",
    "load_vlm": "models",
    # posterior
    "fit_pool_posterior": "bayes.from_pool",
    "BayesVLMPosterior": "bayes.posterior",
    # selection, labels, fine-tuning a run
    **dict.fromkeys(["RunState", "SelectConfig", "select_round", "run_select",
                     "LabelStudioOptions", "import_labels", "adapt_run"], "runs"),
    "make_strategy": "acquisition",
    **dict.fromkeys(["finetune_head", "FinetuneConfig", "RefitConfig"], "finetune"),
    # evaluation and experiments
    "evaluate_zeroshot": "evaluation",
    **dict.fromkeys(["evaluate_model", "LoopConfig", "run_loop"], "loop"),
    "plot_results": "bench",
}

__all__ = ["__version__", *_EXPORTS]


# Like activevlm.utils.lazy.lazy_exports, written out: the root package imports no module of
# its own (tests/test_layers.py keeps it below every layer; the names are looked up on use).
def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'activevlm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"activevlm.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)
