"""Feature pools: write, reopen, resume, bad images, refusals, validation, SigLIP residuals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from activevlm.data import ImageDataset, build_prompts, load_dataset
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import PoolError, ShardedArray, embed_dataset, open_pool
from activevlm.pool import embed as embed_module

torch.set_num_threads(2)
CONFIGS = Path(__file__).parent / "fixtures" / "model_configs"
CLASSES = ["cat", "sea_lion", "teapot"]


def make_images(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """``root/<class>/<i>.jpg|png`` small random images of varying sizes."""
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(20, 48, size=2)
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            img.save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def dataset(images) -> ImageDataset:
    return load_dataset(f"folder:{images}")


@pytest.fixture(scope="module")
def clip():
    return load_vlm(register_model_config(CONFIGS / "tiny-clip.json"), device="cpu")


@pytest.fixture(scope="module")
def siglip():
    return load_vlm(register_model_config(CONFIGS / "tiny-siglip.json"), device="cpu")


@pytest.fixture(scope="module")
def clip_pool(dataset, clip, tmp_path_factory):
    """The reference pool: 12 images, shards of 5 (5 + 5 + 2 rows), batches of 2."""
    out = tmp_path_factory.mktemp("pools") / "clip"
    return embed_dataset(dataset, clip, out, batch_size=2, shard_size=5, progress=False)


def pixels_of(ds: ImageDataset, vlm, rows) -> torch.Tensor:
    return torch.stack([vlm.preprocess(ds.load_image(i)) for i in rows])


class CountingVLM:
    """Forwards to a VLM, counting images encoded; optionally crashes at the n-th batch."""

    def __init__(self, vlm, crash_at_batch: int | None = None):
        self._vlm, self.crash_at_batch = vlm, crash_at_batch
        self.images = self.batches = 0

    def __getattr__(self, name):
        return getattr(self._vlm, name)

    def image_activations(self, pixels, batch_size=256):
        if self.batches == self.crash_at_batch:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.images += len(pixels)
        return self._vlm.image_activations(pixels, batch_size)


def assert_same_pool(a, b) -> None:
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.failures, b.failures)
    np.testing.assert_array_equal(np.asarray(a.image_activations), np.asarray(b.image_activations))
    np.testing.assert_array_equal(a.text_activations, b.text_activations)
    for key in ("dims", "counts", "shards", "arrays", "classnames", "templates", "model"):
        assert a.manifest[key] == b.manifest[key], key


# --- ShardedArray ---------------------------------------------------------------------------

def test_sharded_array_indexing_matches_concatenation(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 0, 5, 2)]
    files = []
    for k, part in enumerate(parts):
        files.append(tmp_path / f"s{k}.npy")
        np.save(files[-1], part)
    full = np.concatenate(parts)
    arr = ShardedArray(files, 3)
    assert arr.shape == (11, 3) and len(arr) == 11
    keys = [3, -1, np.int64(7), slice(None), slice(2, 9), slice(9, 2, -2), slice(5, 5),
            np.array([10, 0, 4, 4, -3]), full[:, 0] > 0, [1, 2], np.array([[1, 2], [3, 10]])]
    for key in keys:
        got = arr[key]
        assert got.dtype == np.float32 and np.array_equal(got, full[key]), key
    np.testing.assert_array_equal(np.asarray(arr), full)
    np.testing.assert_array_equal(arr[2:7, 1], full[2:7, 1])
    chunks = list(arr.chunks(4))
    assert [c[0] for c in chunks] == [slice(0, 4), slice(4, 8), slice(8, 11)]
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), full)
    with pytest.raises(IndexError):
        arr[11]
    with pytest.raises(IndexError):
        arr[np.ones(10, dtype=bool)]
    assert isinstance(arr[:], np.ndarray) and not isinstance(arr[:], np.memmap)


# --- write and reopen -----------------------------------------------------------------------

def test_pool_holds_the_vlm_activations(clip_pool, dataset, clip):
    pool = open_pool(clip_pool.path, model_id=clip.model_id)
    assert isinstance(pool.image_activations, ShardedArray)
    assert pool.image_activations.shape == (12, clip.head.image_dim)
    assert pool.image_residuals is None and pool.caption_activations is None
    pd.testing.assert_frame_equal(pool.items, dataset.items, check_dtype=False)
    px = pixels_of(dataset, clip, range(len(dataset)))
    act, residual = clip.image_activations(px)
    assert residual is None
    np.testing.assert_allclose(pool.image_activations[:], act.numpy(), rtol=1e-5, atol=1e-6)
    # Rows come from three shards; fancy indexing across them agrees with the reference.
    rows = np.array([11, 0, 6, 5])
    np.testing.assert_allclose(pool.image_activations[rows], act.numpy()[rows], atol=1e-6)
    # Class text: prompt-ensemble mean -> head equals open_clip's own text encoder.
    prompts = build_prompts(dataset.classnames, "simple")
    ref_text = torch.stack([clip.encode_text(p).mean(0) for p in prompts])
    torch.testing.assert_close(pool.text_embeddings(), ref_text, rtol=1e-4, atol=1e-5)
    # The stored head reproduces encode_image from pool data alone.
    torch.testing.assert_close(pool.image_embeddings(), clip.encode_image(px), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(pool.image_embeddings(rows), clip.encode_image(px[rows]),
                               rtol=1e-4, atol=1e-5)
    m = pool.manifest
    assert m["status"] == "complete" and m["model"]["family"] == "clip"
    assert m["dims"] == {"image_act": clip.head.image_dim, "text_act": clip.head.text_dim,
                         "embed": clip.head.embed_dim, "residual": None}
    assert m["counts"] == {"planned": 12, "items": 12, "failures": 0, "shards": 3}
    assert [s["rows"] for s in m["shards"]] == [5, 5, 2]
    assert m["classnames"] == CLASSES and pool.templates == ["a photo of a {}."]
    assert m["dataset"]["description"]["layout"] == "folder"


def test_indices_filter_domain_split_and_labels(tmp_path, images, clip):
    base = load_dataset(f"folder:{images}").items.copy()
    base["domain"] = ["a", "b"] * 6
    base["split"] = ["train"] * 8 + ["test"] * 4
    base.loc[[0, 3], "label"] = -1
    ds = ImageDataset("custom", images, CLASSES, base)
    pool = embed_dataset(ds, clip, tmp_path / "p", batch_size=6, progress=False)
    np.testing.assert_array_equal(pool.indices(domain="a"), np.arange(0, 12, 2))
    np.testing.assert_array_equal(pool.indices(domain="b", split="test"), [9, 11])
    np.testing.assert_array_equal(pool.indices(split=["train", "test"]), np.arange(12))
    np.testing.assert_array_equal(pool.indices(labelled=False), [0, 3])
    np.testing.assert_array_equal(pool.indices(domain="b", labelled=True), [1, 5, 7, 9, 11])


def test_captions_are_embedded_with_the_text_tower(tmp_path, images, clip):
    items = load_dataset(f"folder:{images}").items.copy()
    items["caption"] = [f"picture number {i}" for i in range(len(items))]
    ds = ImageDataset("captioned", images, CLASSES, items)
    pool = embed_dataset(ds, clip, tmp_path / "p", batch_size=5, shard_size=7, progress=False)
    assert "caption" in pool.items.columns and pool.manifest["arrays"][-1] == "caption_act"
    ref = clip.text_activations(items["caption"].tolist())
    np.testing.assert_allclose(pool.caption_activations[:], ref.numpy(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pool.caption_embeddings([2, 9]),
                               clip.encode_text(items["caption"].iloc[[2, 9]].tolist()),
                               rtol=1e-4, atol=1e-5)


# --- resume ---------------------------------------------------------------------------------

def test_resume_after_interruption_skips_finished_shards(tmp_path, dataset, clip, clip_pool):
    out = tmp_path / "p"
    # Batches of 2 within shards of 5: batches 0-2 fill shard 0, batch 3 starts shard 1.
    crashing = CountingVLM(clip, crash_at_batch=4)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(dataset, crashing, out, batch_size=2, shard_size=5, progress=False)
    assert (out / "shards" / "shard-00000.json").exists()
    assert not (out / "shards" / "shard-00001.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "incomplete"
    with pytest.raises(PoolError, match="status"):
        open_pool(out)
    finished = (out / "shards" / "image_act-00000.npy").stat().st_mtime_ns

    resumed = CountingVLM(clip)
    pool = embed_dataset(dataset, resumed, out, batch_size=2, shard_size=5, progress=False)
    assert resumed.images == 7  # shards 1 and 2 only
    assert (out / "shards" / "image_act-00000.npy").stat().st_mtime_ns == finished
    assert_same_pool(pool, clip_pool)
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"


def test_rerun_on_complete_pool_is_a_noop(dataset, clip, clip_pool):
    again = CountingVLM(clip, crash_at_batch=0)
    manifest_before = (clip_pool.path / "manifest.json").read_text()
    pool = embed_dataset(dataset, again, clip_pool.path, batch_size=2, shard_size=5,
                         progress=False)
    assert again.images == 0
    assert (clip_pool.path / "manifest.json").read_text() == manifest_before
    assert_same_pool(pool, clip_pool)


def test_crash_before_manifest_is_restartable(tmp_path, dataset, clip, clip_pool, monkeypatch):
    out = tmp_path / "p"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("died while writing the manifest")

    monkeypatch.setattr(embed_module, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(dataset, clip, out, batch_size=2, shard_size=5, progress=False)
    assert (out / "plan.parquet").exists() and not (out / "manifest.json").exists()
    monkeypatch.undo()
    assert_same_pool(embed_dataset(dataset, clip, out, batch_size=2, shard_size=5,
                                   progress=False), clip_pool)


# --- unreadable images ----------------------------------------------------------------------

def test_corrupt_images_are_recorded_and_skipped(tmp_path, clip):
    root = make_images(tmp_path / "imgs", per_class=3, seed=2)
    good = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "9-truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "teapot" / "notes.jpg").write_text("this is not an image\n")
    ds = load_dataset(f"folder:{root}")
    pool = embed_dataset(ds, clip, tmp_path / "p", batch_size=4, shard_size=4, progress=False)
    assert sorted(pool.failures["sample_id"]) == ["cat/9-truncated.jpg", "teapot/notes.jpg"]
    assert list(pool.failures.columns) == ["sample_id", "path", "error"]
    errors = dict(zip(pool.failures["sample_id"], pool.failures["error"], strict=True))
    assert "truncated" in errors["cat/9-truncated.jpg"]
    assert "UnidentifiedImageError" in errors["teapot/notes.jpg"]
    assert pool.manifest["counts"] == {"planned": 11, "items": 9, "failures": 2, "shards": 3}
    ok = ds.items.index[~ds.items["sample_id"].isin(errors)].to_numpy()
    pd.testing.assert_frame_equal(pool.items, ds.items.iloc[ok].reset_index(drop=True),
                                  check_dtype=False)
    act, _ = clip.image_activations(pixels_of(ds, clip, ok))
    np.testing.assert_allclose(pool.image_activations[:], act.numpy(), rtol=1e-5, atol=1e-6)


# --- refusals -------------------------------------------------------------------------------

def test_other_model_in_existing_pool_is_refused(dataset, siglip, clip_pool):
    with pytest.raises(PoolError) as err:
        embed_dataset(dataset, siglip, clip_pool.path, batch_size=2, shard_size=5,
                      progress=False)
    msg = str(err.value)
    assert clip_pool.model_id in msg and siglip.model_id in msg
    with pytest.raises(PoolError, match="expected 'other-model'"):
        open_pool(clip_pool.path, model_id="other-model")


def test_other_dataset_or_settings_in_existing_pool_are_refused(tmp_path, images, clip,
                                                               clip_pool):
    fewer = load_dataset(f"folder:{images}")
    fewer = ImageDataset("fewer", images, CLASSES, fewer.items.iloc[:-1])
    with pytest.raises(PoolError, match="11 items .* planned for 12"):
        embed_dataset(fewer, clip, clip_pool.path, shard_size=5, progress=False)
    relabelled = load_dataset(f"folder:{images}").items.copy()
    relabelled.loc[4, "label"] = 0
    with pytest.raises(PoolError, match="row 4 column 'label'"):
        embed_dataset(ImageDataset("x", images, CLASSES, relabelled), clip, clip_pool.path,
                      shard_size=5, progress=False)
    ds = load_dataset(f"folder:{images}")
    with pytest.raises(PoolError, match="shard_size"):
        embed_dataset(ds, clip, clip_pool.path, shard_size=6, progress=False)
    with pytest.raises(PoolError, match="templates"):
        embed_dataset(ds, clip, clip_pool.path, shard_size=5, templates="domain-agnostic",
                      progress=False)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(PoolError, match="not empty"):
        embed_dataset(ds, clip, stray, progress=False)


# --- validation -----------------------------------------------------------------------------

@pytest.fixture
def pool_copy(tmp_path, clip_pool) -> Path:
    return Path(shutil.copytree(clip_pool.path, tmp_path / "copy"))


def edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_open_pool_reports_tampered_dims(pool_copy):
    edit_manifest(pool_copy, lambda m: m["dims"].update(image_act=65))
    with pytest.raises(PoolError, match=r"image_act-00000\.npy.*dims\.image_act = 65"):
        open_pool(pool_copy)


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "manifest.json is not valid JSON"),
    (lambda p: edit_manifest(p, lambda m: m.update(format_version=99)), "'format_version' is 99"),
    (lambda p: edit_manifest(p, lambda m: m["counts"].update(items=13)), "'counts.items' is 13"),
    (lambda p: edit_manifest(p, lambda m: m.pop("dims")), "field 'dims' is missing"),
    (lambda p: edit_manifest(p, lambda m: m["dims"].update(text_act=3)), r"text_act\.npy: shape"),
    (lambda p: edit_manifest(p, lambda m: m["shards"][1].update(rows=4)), "shards hold 11 rows"),
    (lambda p: np.save(p / "shards" / "image_act-00001.npy", np.zeros((4, 64), np.float32)),
     r"image_act-00001\.npy: shape \[4, 64\]"),
    (lambda p: edit_manifest(p, lambda m: m.update(status="incomplete")), "resume"),
    (lambda p: (p / "shards" / "image_act-00002.npy").unlink(), "shard file missing"),
    (lambda p: (p / "items.parquet").unlink(), "table missing"),
    (lambda p: (p / "head.safetensors").unlink(), "projection head file missing"),
])
def test_open_pool_names_file_and_field(pool_copy, damage, message):
    damage(pool_copy)
    with pytest.raises(PoolError, match=message):
        open_pool(pool_copy)


# --- SigLIP ---------------------------------------------------------------------------------

def test_siglip_pool_stores_residuals_and_head_reproduces_encode_image(tmp_path, dataset,
                                                                        siglip):
    pool = embed_dataset(dataset, siglip, tmp_path / "p", batch_size=4, shard_size=8,
                         progress=False)
    pool = open_pool(pool.path)
    D = siglip.head.embed_dim
    assert pool.manifest["dims"]["residual"] == D
    assert pool.image_residuals is not None and pool.image_residuals.shape == (12, D)
    assert pool.head.image_bias is not None and pool.head.logit_bias is not None
    px = pixels_of(dataset, siglip, range(len(dataset)))
    torch.testing.assert_close(pool.image_embeddings(), siglip.encode_image(px), rtol=1e-4,
                               atol=1e-5)
    # Without the residual the head does not reproduce open_clip (the residual matters).
    no_res = pool.head.image_embeddings(torch.from_numpy(pool.image_activations[:]))
    assert not torch.allclose(no_res, siglip.encode_image(px), atol=1e-3)
