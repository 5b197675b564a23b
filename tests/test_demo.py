"""The demo world: deterministic generator, manifest dataset, cached pool, shipped model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from activevlm.data import load_dataset
from activevlm.data.splits import DEFAULT_RATIOS, split_counts
from activevlm.demo.model import MODEL_CARD_PATH, WEIGHTS_PATH, load_demo_vlm
from activevlm.demo.render import DOMAINS
from activevlm.demo.world import (
    CLASSNAMES,
    GENERATOR_VERSION,
    SOURCE_DOMAINS,
    TARGET_DOMAINS,
    WORLD,
    default_root,
    demo_dataset,
    sample,
    write_world,
)


def test_generator_is_deterministic_per_image():
    a = sample(DOMAINS, n_per_class=2, seed=3)
    b = sample(DOMAINS, n_per_class=2, seed=3, workers=2)
    assert a.pixels.shape == (len(DOMAINS) * len(CLASSNAMES) * 2, 64, 64, 3)
    assert a.pixels.dtype == np.uint8
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.items.equals(b.items)
    # An image depends on (seed, stream, domain, class, index) only, not on the set size.
    c = sample(("sketch",), n_per_class=3, seed=3)
    first_two = c.items["index"].to_numpy() < 2
    np.testing.assert_array_equal(c.pixels[first_two],
                                  a.pixels[(a.items["domain"] == "sketch").to_numpy()])
    other = sample(DOMAINS, n_per_class=2, seed=4)
    assert (other.pixels != a.pixels).any(axis=(1, 2, 3)).all()
    assert sample(DOMAINS, 2, seed=3, stream=WORLD).pixels.tobytes() != a.pixels.tobytes()


def test_captions_vary_and_name_the_class():
    s = sample(SOURCE_DOMAINS, n_per_class=6, seed=0)
    for name, text in zip(s.items["classname"], s.items["caption"], strict=True):
        assert re.search(rf"\b{name}\b", text), (name, text)
    assert s.items["caption"].nunique() > 0.8 * len(s.items)
    # Colour is drawn independently of the class: every class shows several colours.
    colours = s.items.assign(colour=s.items["caption"].str.extract(
        r"\b(red|orange|yellow|green|blue|purple|pink|brown|teal|grey)\b")[0])
    assert colours.groupby("classname")["colour"].nunique().min() >= 2


def test_domains_differ_in_style():
    s = sample(DOMAINS, n_per_class=4, seed=0)
    px = s.pixels.astype(np.float32)
    per_domain = {d: px[(s.items["domain"] == d).to_numpy()] for d in DOMAINS}
    # Sketches are mostly paper, photos are busy; clipart has saturated flat backgrounds.
    assert per_domain["sketch"].mean() > 220
    assert per_domain["photo"].std(axis=(1, 2)).mean() > per_domain["product"].std(
        axis=(1, 2)).mean()
    saturation = {d: (v.max(-1) - v.min(-1)).mean() for d, v in per_domain.items()}
    assert saturation["sketch"] < 20 < saturation["clipart"]


def test_world_builds_through_the_manifest_layout(tmp_path):
    root = tmp_path / "world"
    manifest = write_world(root, seed=1, n_per_class=5, progress=False)
    stamp = manifest.stat().st_mtime_ns
    ds = demo_dataset(root, seed=1, n_per_class=5, progress=False)
    assert manifest.stat().st_mtime_ns == stamp  # reused, not regenerated
    plain = load_dataset(f"manifest:{manifest}")
    assert ds.items.equals(plain.items) and ds.classnames == plain.classnames
    via_registry = load_dataset("demo", root=root, seed=1, n_per_class=5, progress=False)
    assert via_registry.items.equals(ds.items) and via_registry.name == "demo"
    assert ds.classnames == list(CLASSNAMES)
    assert len(ds) == len(DOMAINS) * len(CLASSNAMES) * 5
    assert set(ds.items.columns) >= {"sample_id", "path", "label", "domain", "split", "caption"}
    # sample ids (shown to annotators) name the domain, never the class
    assert ds.items["sample_id"].str.fullmatch(r"images/(\w+)/\1_\d{5}\.png").all()
    for name in ds.classnames:
        assert not ds.items["sample_id"].str.contains(name).any()
    numbers = ds.items["sample_id"].str[-9:-4].astype(int)
    for _, rows in numbers.groupby(ds.items["domain"]):
        assert sorted(rows) == list(range(len(rows)))
        labels = ds.items.loc[rows.index, "label"]
        assert abs(rows.corr(labels, method="spearman")) < 0.5  # not numbered class by class
    expected = dict(zip(("train", "val", "test"), split_counts(5, DEFAULT_RATIOS), strict=True))
    counts = ds.items.groupby(["domain", "label", "split"]).size()
    assert (counts.unstack()[list(expected)] == list(expected.values())).all().all()
    with pytest.raises(ValueError, match="different demo world"):
        write_world(root, seed=2, n_per_class=5, progress=False)


def test_default_root_respects_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_root(0, 100).is_relative_to(tmp_path / "activevlm" / "demo")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root(0, 100).is_relative_to(Path.home() / ".cache" / "activevlm")


def test_demo_cli_builds_then_reuses_the_pool(tmp_path, monkeypatch):
    from activevlm.cli.main import app
    from activevlm.pool import open_pool

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--per-class", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pool_dir = tmp_path / "cache" / "activevlm" / "demo" / f"pool-v{GENERATOR_VERSION}-seed0-n2"
    assert str(pool_dir) in result.output.replace("\n", "")
    pool = open_pool(pool_dir)
    assert len(pool) == len(DOMAINS) * len(CLASSNAMES) * 2
    assert pool.caption_activations is not None and pool.model_id.startswith("activevlm-demo@")
    shards = {p: p.stat().st_mtime_ns for p in pool_dir.rglob("*") if p.is_file()}
    again = runner.invoke(app, ["demo", "--per-class", "2", "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in shards} == shards


def _card_table() -> dict[str, float]:
    rows = re.findall(r"^\| (\w+) \| (?:source|target|all) \| ([\d.]+) % \|$",
                      MODEL_CARD_PATH.read_text(), flags=re.M)
    return {d: float(v) / 100 for d, v in rows}


def test_shipped_weights_match_the_model_card_hash_and_size():
    card = MODEL_CARD_PATH.read_text()
    digest = hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()
    assert f"SHA-256: `{digest}`" in card
    assert WEIGHTS_PATH.stat().st_size <= 15e6
    table = _card_table()
    assert set(table) == {*DOMAINS, "all"}
    # The quality bar of the demo world, as recorded.
    assert all(table[d] >= 0.75 for d in SOURCE_DOMAINS)
    assert any(0.25 <= table[d] <= 0.60 for d in TARGET_DOMAINS)


@pytest.mark.slow
def test_shipped_weights_reproduce_the_model_card_table():
    from activevlm.demo.evaluate import accuracy_gap, eval_sample, zero_shot_accuracy

    vlm = load_demo_vlm("cpu")
    table = zero_shot_accuracy(vlm.encode_image, vlm.encode_text, eval_sample())
    assert accuracy_gap(table, _card_table()) <= 1.0, (table, _card_table())


def test_infonce_matches_a_brute_force_reference():
    import torch

    from activevlm.demo.train import infonce

    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 1, 2, 3, 3])
    scale = torch.tensor(7.0)
    sim = [[scale * (img[i] / img[i].norm()) @ (txt[j] / txt[j].norm()) for j in range(6)]
           for i in range(6)]

    def side(logit) -> float:
        # Each row's positives (same label) share the target mass equally.
        total = 0.0
        for i in range(6):
            pos = [j for j in range(6) if labels[j] == labels[i]]
            log_z = torch.logsumexp(torch.stack([logit(i, j) for j in range(6)]), 0)
            total += sum(float(log_z - logit(i, j)) for j in pos) / len(pos)
        return total / 6

    expected = (side(lambda i, j: sim[i][j]) + side(lambda i, j: sim[j][i])) / 2
    assert abs(float(infonce(img, txt, scale, labels)) - expected) < 1e-5
    # Distinct labels: CLIP's plain symmetric InfoNCE.
    plain = torch.arange(6)
    logits = torch.stack([torch.stack(row) for row in sim])
    clip = (torch.nn.functional.cross_entropy(logits, plain)
            + torch.nn.functional.cross_entropy(logits.T, plain)) / 2
    assert abs(float(infonce(img, txt, scale, plain)) - float(clip)) < 1e-5
