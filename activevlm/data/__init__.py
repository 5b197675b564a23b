"""Datasets (folder trees, manifests, OfficeHome, PACS, ImageNet variants, webdataset and
img2dataset shards) and prompts."""

from activevlm.data import archives as _archives  # noqa: F401  (registers the layouts)
from activevlm.data import layouts as _layouts  # noqa: F401
from activevlm.data import manifest as _manifest  # noqa: F401
from activevlm.data.dataset import IMAGE_EXTENSIONS, ImageDataset
from activevlm.data.prompts import TEMPLATES, build_prompts, clean_classname
from activevlm.data.registry import available_layouts, load_dataset, register_layout

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "TEMPLATES",
    "available_layouts",
    "build_prompts",
    "clean_classname",
    "load_dataset",
    "register_layout",
]
