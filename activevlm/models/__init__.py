"""open_clip models split into encoders (activations) and the linear projection head.

Names load on first use (:mod:`activevlm.utils.lazy`): the projection head and the links
import without open_clip or torchvision, which only commands that run an encoder pay for.
"""

from activevlm.utils.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["ModelFileError", "ProjectionHead"], "head"),
    **dict.fromkeys(["Link", "link_for", "link_probs"], "links"),
    **dict.fromkeys(["default_checkpoint", "get_model_config", "register_default_checkpoint",
                     "register_model_config"], "registry"),
    **dict.fromkeys(["SUPPORTED", "UnsupportedModelError"], "towers"),
    **dict.fromkeys(["VLM", "PretrainedUnavailableError", "file_sha256", "load_vlm"], "wrapper"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
