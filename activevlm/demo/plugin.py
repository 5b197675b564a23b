"""The demo's registrations, imported through the ``activevlm.plugins`` entry point ``demo``:
the dataset layout ``"demo"`` (the generated world) and the default checkpoint of
``"activevlm-demo"`` (its shipped weights), so that data/ and models/ never import the demo."""

from __future__ import annotations

from pathlib import Path

from activevlm.data import ImageDataset, register_layout
from activevlm.demo.model import MODEL_NAME, demo_checkpoint, register_demo_model
from activevlm.demo.world import DEFAULT_PER_CLASS, demo_dataset
from activevlm.models import register_default_checkpoint


@register_layout("demo", takes_path=False)
def load_demo(*, root: str | Path | None = None, seed: int = 0,
              n_per_class: int = DEFAULT_PER_CLASS, progress: bool = True) -> ImageDataset:
    """``load_dataset("demo", ...)``: the generated demo world (see ``demo_dataset``)."""
    return demo_dataset(root, seed=seed, n_per_class=n_per_class, progress=progress)


register_demo_model()
register_default_checkpoint(MODEL_NAME, demo_checkpoint)
