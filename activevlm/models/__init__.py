"""open_clip models split into encoders (activations) and the linear projection head."""

from activevlm.models.head import ProjectionHead
from activevlm.models.links import Link, link_for, link_probs
from activevlm.models.registry import (
    default_checkpoint,
    get_model_config,
    register_default_checkpoint,
    register_model_config,
)
from activevlm.models.towers import SUPPORTED, UnsupportedModelError
from activevlm.models.wrapper import VLM, PretrainedUnavailableError, file_sha256, load_vlm

__all__ = [
    "SUPPORTED",
    "Link",
    "VLM",
    "PretrainedUnavailableError",
    "ProjectionHead",
    "UnsupportedModelError",
    "default_checkpoint",
    "file_sha256",
    "get_model_config",
    "link_for",
    "link_probs",
    "load_vlm",
    "register_default_checkpoint",
    "register_model_config",
]
