"""The demo world: generated captioned images with domain shift and a tiny model trained on them.

- ``activevlm.demo.world``: ``sample`` (in memory), ``write_world`` / ``demo_dataset`` (a
  manifest dataset in the user cache, read by the regular ``manifest:`` layout).
- ``activevlm.demo.model``: the shipped ``activevlm-demo`` open_clip model
  (``load_demo_vlm``, ``register_demo_model``, ``demo_checkpoint``).
- ``activevlm.demo.pool``: ``demo_pool``, the demo world embedded by the demo model.
- ``activevlm.demo.evaluate``: the model card's per-domain zero-shot table.
- ``activevlm.demo.plugin``: the ``activevlm.plugins`` entry point that registers the
  dataset layout ``demo`` and the default checkpoint of ``activevlm-demo``.
- ``python -m activevlm.demo.train``: reproduces the shipped weights and model card.
"""

from activevlm.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["MODEL_NAME", "demo_checkpoint", "load_demo_vlm", "register_demo_model"],
                    "model"),
    "demo_pool": "pool",
    **dict.fromkeys(["CLASSNAMES", "DOMAINS", "SOURCE_DOMAINS", "TARGET_DOMAINS", "demo_dataset",
                     "sample"], "world"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
