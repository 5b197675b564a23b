"""activevlm.models: the activation/projection split must reproduce open_clip exactly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch

from activevlm.models import (
    PretrainedUnavailableError,
    UnsupportedModelError,
    file_sha256,
    load_vlm,
    register_model_config,
)

torch.set_num_threads(2)
CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
TINY = ["tiny-clip", "tiny-siglip", "tiny-cnn-clip"]
TEXTS = ["a photo of a cat.", "a dog", "an aeroplane in the sky", "x", "two birds on a wire"]
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _register():
    for name in TINY:
        register_model_config(CONFIGS / f"{name}.json")


@pytest.fixture(scope="module", params=TINY)
def vlm(request):
    return load_vlm(request.param, device="cpu")


def _pixels(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_image_head_reproduces_open_clip_encode_image(vlm):
    pixels = _pixels()
    act, residual = vlm.image_activations(pixels, batch_size=2)  # batched path
    with torch.no_grad():
        ref = vlm.model.encode_image(pixels)
    assert act.shape == (5, vlm.head.image_dim) and act.dtype == torch.float32
    g = vlm.head.image_embeddings(act, residual)
    torch.testing.assert_close(g, ref, atol=ATOL, rtol=1e-5)
    if vlm.family == "siglip":
        # the residual and the projected part both matter: neither is a trivial zero
        assert residual.shape == (5, vlm.head.embed_dim)
        wa = vlm.head.image_embeddings(act)
        assert residual.norm() > 0.05 * ref.norm() and wa.norm() > 0.05 * ref.norm()
        assert vlm.head.image_bias is not None
    elif vlm.name == "tiny-cnn-clip":
        # timm trunk + linear projection (with bias): W and b are head.proj's, as stored
        assert residual is None
        torch.testing.assert_close(vlm.head.image_weight, vlm.model.visual.head.proj.weight)
        torch.testing.assert_close(vlm.head.image_bias, vlm.model.visual.head.proj.bias)
    else:
        assert residual is None and vlm.head.image_bias is None
        # CLIP: open_clip stores proj as [d_in, D]; the head holds W = proj.T  ([D, d_in])
        torch.testing.assert_close(vlm.head.image_weight, vlm.model.visual.proj.detach().T)


def test_text_head_reproduces_open_clip_encode_text(vlm):
    act = vlm.text_activations(TEXTS, batch_size=2)
    torch.testing.assert_close(act, vlm.text_activations(TEXTS), atol=ATOL, rtol=1e-5)
    with torch.no_grad():
        ref = vlm.model.encode_text(vlm.tokenizer(TEXTS))
    torch.testing.assert_close(vlm.head.text_embeddings(act), ref, atol=ATOL, rtol=1e-5)
    assert (vlm.head.text_bias is not None) == (vlm.family == "siglip")


def test_clip_text_activation_is_eot_token_after_ln_final():
    """Independent reference: recompute the CLIP text tower by hand up to the pooled token."""
    vlm = load_vlm("tiny-clip", device="cpu")
    m, tokens = vlm.model, vlm.tokenizer(TEXTS)
    with torch.no_grad():
        x = m.token_embedding(tokens) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        ref = x[torch.arange(len(TEXTS)), tokens.argmax(dim=-1)]
    torch.testing.assert_close(vlm.text_activations(TEXTS), ref, atol=ATOL, rtol=1e-5)


def test_logits_via_head_equal_open_clip(vlm):
    pixels = _pixels(4, seed=1)
    act, residual = vlm.image_activations(pixels)
    head = vlm.head
    logits = head.logits(head.image_embeddings(act, residual),
                         head.text_embeddings(vlm.text_activations(TEXTS)))
    with torch.no_grad():
        ref, _ = vlm.model.get_logits(pixels, vlm.tokenizer(TEXTS))
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-5)
    assert head.logit_scale == pytest.approx(float(vlm.model.logit_scale.detach().exp()))
    if vlm.family == "siglip":
        assert head.logit_bias == pytest.approx(-10.0)  # init_logit_bias of the config
    else:
        assert head.logit_bias is None


def test_random_init_is_deterministic_and_keeps_global_rng():
    before = torch.get_rng_state()
    a, b = load_vlm("tiny-siglip", device="cpu"), load_vlm("tiny-siglip", device="cpu")
    assert torch.equal(torch.get_rng_state(), before)
    c = load_vlm("tiny-siglip", device="cpu", seed=1)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.model_id == b.model_id != c.model_id
    assert a.model_id.startswith("tiny-siglip@random-init:seed=0:")


def test_checkpoint_load_and_sha256_model_id(tmp_path):
    source = load_vlm("tiny-clip", device="cpu", seed=3)
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = load_vlm("tiny-clip", checkpoint=path, device="cpu", seed=0)
    pixels = _pixels(3)
    torch.testing.assert_close(loaded.encode_image(pixels), source.encode_image(pixels))
    torch.testing.assert_close(loaded.head.text_weight, source.head.text_weight)

    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path, chunk_size=1000) == expected  # streamed == whole-file hash
    assert loaded.model_id == f"tiny-clip@sha256:{expected}"
    assert load_vlm("tiny-clip", checkpoint=path, device="cpu").model_id == loaded.model_id

    other = tmp_path / "other.pt"
    torch.save(load_vlm("tiny-clip", device="cpu", seed=4).model.state_dict(), other)
    assert load_vlm("tiny-clip", checkpoint=other, device="cpu").model_id != loaded.model_id
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_vlm("tiny-clip", checkpoint=tmp_path / "missing.pt")


def test_unsupported_architecture_lists_supported(tmp_path):
    cfg = json.loads((CONFIGS / "tiny-clip.json").read_text())
    cfg["vision_cfg"] = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}  # ModifiedResNet
    path = tmp_path / "tiny-rn-unsupported.json"
    path.write_text(json.dumps(cfg))
    register_model_config(path)
    with pytest.raises(UnsupportedModelError) as err:
        load_vlm("tiny-rn-unsupported", device="cpu")
    msg = str(err.value)
    assert "ModifiedResNet" in msg
    assert "Supported:" in msg and "VisionTransformer" in msg and "SigLIP" in msg


def test_register_model_config_validates(tmp_path):
    bad = tmp_path / "tiny-missing-fields.json"
    bad.write_text(json.dumps({"embed_dim": 8, "vision_cfg": {}}))
    with pytest.raises(ValueError, match=r"tiny-missing-fields\.json.*text_cfg"):
        register_model_config(bad)
    assert "tiny-missing-fields" not in open_clip.list_models()
    assert register_model_config(CONFIGS / "tiny-clip.json") == "tiny-clip"  # idempotent
    clash = tmp_path / "tiny-clip.json"
    cfg = json.loads((CONFIGS / "tiny-clip.json").read_text())
    clash.write_text(json.dumps(dict(cfg, embed_dim=16)))
    with pytest.raises(ValueError, match="already registered"):
        register_model_config(clash)
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        load_vlm("no-such-model")


def test_pretrained_tag_offline_fails_fast_and_clearly():
    hub = pytest.importorskip("huggingface_hub")
    cached = hub.try_to_load_from_cache("laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                                        "open_clip_pytorch_model.bin")
    if isinstance(cached, str):
        pytest.skip("ViT-B-32 laion2b weights are cached on this machine")
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE=1") as err:
        load_vlm("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    assert "laion2b_s34b_b79k" in str(err.value)
    with pytest.raises(ValueError, match="known tags: .*laion2b_s34b_b79k"):
        load_vlm("ViT-B-32", pretrained="no-such-tag", device="cpu")


def test_prompt_ensemble_averages_activations_before_normalisation(vlm):
    prompts = [["a photo of a cat.", "a drawing of a cat.", "cat"], ["a photo of a dog."]]
    ens = vlm.prompt_activations(prompts, batch_size=2)
    each = vlm.text_activations([p for group in prompts for p in group])
    torch.testing.assert_close(ens, torch.stack([each[:3].mean(0), each[3]]))
    # linear head: projecting the mean activation == mean of open_clip's text embeddings
    ref = vlm.encode_text(prompts[0]).mean(0)
    torch.testing.assert_close(vlm.head.text_embeddings(ens)[0], ref, atol=ATOL, rtol=1e-5)
    with pytest.raises(ValueError, match=r"classes \[1\] have no prompts"):
        vlm.prompt_activations([["a"], []])


def test_class_text_activations_uses_cleaned_classnames(vlm):
    prompts_mod = pytest.importorskip("activevlm.data.prompts")
    templates = ["a photo of a {}.", "a drawing of a {}."]
    ens = vlm.class_text_activations(["golden_retriever", "cat"], templates)
    expected = prompts_mod.build_prompts(["golden_retriever", "cat"], templates)
    assert expected[0][0] == "a photo of a golden retriever."
    torch.testing.assert_close(ens, vlm.prompt_activations(expected))


def test_precision_falls_back_to_fp32_on_cpu():
    with pytest.warns(UserWarning, match="needs CUDA"):
        v = load_vlm("tiny-clip", device="cpu", precision="amp")
    assert v.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        load_vlm("tiny-clip", device="cpu", precision="fp64")


def test_library_below_the_cli_imports_no_encoder_until_used():
    """Selection, scoring, index, posterior and pool modules must not pay for open_clip or
    torchvision through ``activevlm.models``; ``load_vlm`` still loads them on first use."""
    code = ("import sys, activevlm.runs.select, activevlm.bayes, activevlm.pool, "
            "activevlm.index, activevlm.acquisition\n"
            "from activevlm.models import ProjectionHead\n"
            "heavy = [m for m in ('open_clip', 'torchvision', 'timm') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from activevlm.models import load_vlm\n"
            "assert 'open_clip' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
