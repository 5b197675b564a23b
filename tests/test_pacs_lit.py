"""The LiT benchmark on PACS (benchmarks/pacs_lit): the training adapter, the subset and the
config plumbing, and a reduced run on the real images that asserts the claims which held in
the full benchmark with every seed (README.md there). Skipped when ../shared/data/pacs is
absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from activevlm.models import load_vlm, register_model_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "pacs_lit"))
import lit_model  # noqa: E402
import run_lit  # noqa: E402

CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
# Margins: about half the gaps of the quick run (seed 0, 21 test images per target), each
# below the smallest gap over the full benchmark's seeds (benchmarks/pacs_lit/README.md).
ECE_MARGIN = 0.1  # Bayesian vs deterministic ECE on the targets (quick: 0.13 vs 0.37)
SOURCE_ACCURACY = 0.8  # zero-shot on the sources' test split (quick 0.90, full 0.92)
SOURCE_GAP = 0.3  # sources minus targets, zero-shot (quick 0.57, full 0.52)
RANDOM_GAIN = 0.05  # random selection after 50 labels vs zero-shot (quick +0.24 / +0.19)
MEAN_GAIN = 0.1  # the quick strategies' mean after 50 labels (quick +0.28 / +0.29)
HAS_PACS = run_lit.DEFAULT_DATA.is_dir()
needs_pacs = pytest.mark.skipif(not HAS_PACS, reason=f"PACS not found at "
                                f"{run_lit.DEFAULT_DATA} (../shared/data/pacs beside the repo)")


def test_cached_features_give_the_models_image_embeddings():
    """Training on cached trunk features is training the model itself: the adapter's image
    embeddings equal open_clip's encode_image of the pixels."""
    vlm = load_vlm(register_model_config(CONFIGS / "tiny-cnn-clip.json"), device="cpu")
    model = vlm.model
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    adapter = lit_model.CachedImageFeatures(model)
    with torch.no_grad():
        features = model.visual.trunk(pixels)
        torch.testing.assert_close(adapter.encode_image(features), model.encode_image(pixels))
        tokens = vlm.tokenizer(["a dog."])
        torch.testing.assert_close(adapter.encode_text(tokens), model.encode_text(tokens))
    assert adapter.logit_scale is model.logit_scale


def test_grid_config_keeps_every_strategy_and_fills_pool_and_seed(tmp_path):
    config = yaml.safe_load(run_lit.DEFAULT_CONFIG.read_text())
    grid = run_lit.grid_config(run_lit.DEFAULT_CONFIG, tmp_path / "pool", 3, quick=False)
    assert grid["strategies"] == config["strategies"] and grid["seeds"] == [3]
    assert [d["pool"] for d in grid["datasets"]] == [str(tmp_path / "pool")]
    assert grid["loop"] == config["loop"]
    other = tmp_path / "mine.yaml"
    other.write_text(yaml.safe_dump({**config, "strategies": ["random", "new-rule"]}))
    assert run_lit.grid_config(other, tmp_path, 0, quick=False)["strategies"] == \
        ["random", "new-rule"]
    quick = run_lit.grid_config(other, tmp_path, 0, quick=True)
    assert quick["strategies"] == run_lit.QUICK_STRATEGIES and quick["loop"]["rounds"] == 2


@needs_pacs
def test_quick_subset_takes_the_first_items_of_each_cell():
    full = run_lit.pacs_dataset(run_lit.DEFAULT_DATA)
    sub = run_lit.quick_subset(full).items
    assert len(sub) == 4 * 7 * sum(run_lit.QUICK_PER_SPLIT.values())
    for (domain, label, split), rows in sub.groupby(["domain", "label", "split"]):
        cell = full.items[(full.items["domain"] == domain) & (full.items["label"] == label)
                          & (full.items["split"] == split)]
        first = sorted(cell["sample_id"])[:run_lit.QUICK_PER_SPLIT[split]]
        assert sorted(rows["sample_id"]) == first


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("pacs_lit")
    tables = run_lit.run_benchmark(run_lit.DEFAULT_DATA, out, [0], quick=True, progress=False,
                                   log=lambda *a: None)
    return out, tables


@needs_pacs
@pytest.mark.slow
def test_quick_run_writes_tables_and_plots(quick):
    out, tables = quick
    for name in ("zeroshot.parquet", "failure.parquet", "al/results.parquet", "results.md",
                 "accuracy_cartoon.png", "ece_sketch.png"):
        assert (out / name).is_file(), name
    assert set(tables["al"]["strategy"]) == set(run_lit.QUICK_STRATEGIES)
    assert "accuracy minus random-targeted" in (out / "results.md").read_text()


@needs_pacs
@pytest.mark.slow
def test_bayesian_zero_shot_is_better_calibrated_on_targets(quick):
    zs = quick[1]["zeroshot"].set_index(["domain", "model"])
    det, bayes = zs.loc[("targets (all)", "deterministic")], zs.loc[("targets (all)", "bayesian")]
    assert bayes["ece"] < det["ece"] - ECE_MARGIN
    assert bayes["nll"] < det["nll"]


@needs_pacs
@pytest.mark.slow
def test_pretrained_features_transfer_to_sources_far_better_than_to_targets(quick):
    zs = quick[1]["zeroshot"].set_index(["domain", "model"])["accuracy"]
    sources = zs.loc[("sources (all)", "deterministic")]
    targets = zs.loc[("targets (all)", "deterministic")]
    assert sources > SOURCE_ACCURACY and sources > targets + SOURCE_GAP


@needs_pacs
@pytest.mark.slow
def test_labels_help_every_target(quick):
    al = quick[1]["al"]
    last = al["round"].max()
    for target, rows in al.groupby("target"):
        zero_shot = rows.loc[rows["round"] == 0, "accuracy"].iloc[0]
        final = rows[rows["round"] == last].set_index("strategy")["accuracy"]
        assert final["random-untargeted"] > zero_shot + RANDOM_GAIN, target
        assert final.mean() > zero_shot + MEAN_GAIN, target
