"""``webdataset:`` and ``img2dataset:`` layouts on shards written here, and ``embed`` on them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from activevlm.cli.main import app
from activevlm.data import load_dataset
from activevlm.data.archives import ParquetRows
from activevlm.data.splits import split_counts
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import open_pool
from activevlm.pool.reader import ImageReader

torch.set_num_threads(2)
CONFIG = Path(__file__).parent / "fixtures" / "model_configs" / "tiny-clip.json"
CLASSES = ["apple", "pear", "plum"]
BROKEN = b"\xff\xd8\xff\xe0 not really a jpeg"


def png(seed: int) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), pixels


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, n_shards: int = 2, per_shard: int = 4) -> dict[str, np.ndarray]:
    """img2dataset-style shards: <key>.png/.txt/.json/.cls; shard 1 holds a corrupt image and
    a key with metadata but no image. Returns sample_id -> pixels of the readable images."""
    root.mkdir(parents=True)
    pixels = {}
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                data, pix = png(100 * s + j)
                meta = {"key": key, "url": f"http://x/{key}", "status": "success",
                        "caption": f"json caption {key}", "domain": ["photo", "sketch"][j % 2]}
                if (s, j) == (1, 1):
                    data = BROKEN
                else:
                    pixels[f"{s:05d}.tar/{key}.png"] = pix
                if (s, j) != (1, 2):
                    add(tar, f"{key}.png", data)
                else:
                    pixels.pop(f"{s:05d}.tar/{key}.png")
                add(tar, f"{key}.txt", f"a photo number {s}-{j}".encode())
                add(tar, f"{key}.json", json.dumps(meta).encode())
                add(tar, f"{key}.cls", str((s + j) % 3).encode())
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "00000_stats.json").write_text("{}")  # img2dataset's side files are ignored
    return pixels


def test_webdataset_lists_samples_in_order_with_labels_captions_and_metadata(tmp_path):
    pixels = write_webdataset(tmp_path / "wds")
    ds = load_dataset(f"webdataset:{tmp_path / 'wds'}")
    assert ds.name == "webdataset" and ds.classnames == CLASSES and len(ds) == 8
    ids = ds.items["sample_id"].tolist()
    assert ids[:4] == [f"00000.tar/00000{j:04d}.png" for j in range(4)]
    assert ids[6] == "00001.tar/000010002"  # the key without an image keeps its key
    assert ds.items["label"].tolist() == [(s + j) % 3 for s in range(2) for j in range(4)]
    assert ds.items["caption"].iloc[5] == "a photo number 1-1"  # .txt wins over json
    assert ds.items["domain"].tolist() == ["photo", "sketch"] * 4
    assert ds.items["path"].iloc[0] == str(tmp_path / "wds" / "00000.tar" / "000000000.png")
    for i, sid in enumerate(ids):
        if sid in pixels:
            np.testing.assert_array_equal(np.asarray(ds.load_image(i)), pixels[sid])
    with pytest.raises(OSError):
        ds.load_image(5)  # corrupt bytes
    with pytest.raises(FileNotFoundError, match="no image member"):
        ds.load_image(6)
    assert ds.description["without_image"] == 1


def test_webdataset_reader_survives_pickling_into_workers(tmp_path):
    pixels = write_webdataset(tmp_path / "wds")
    ds = load_dataset(f"webdataset:{tmp_path / 'wds'}")
    reader = ImageReader(ds, lambda im: torch.from_numpy(np.asarray(im).copy()))
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=2)
    seen = {ds.items["sample_id"].iloc[i]: (x, err) for i, x, err in loader}
    assert {s for s, (x, _) in seen.items() if x is not None} == set(pixels)
    for sid, pix in pixels.items():
        np.testing.assert_array_equal(seen[sid][0].numpy(), pix)
    assert "no image member" in seen["00001.tar/000010002"][1]
    assert seen["00001.tar/000010001.png"][0] is None
    assert seen["00001.tar/000010001.png"][1].startswith(("OSError", "UnidentifiedImageError"))


def test_webdataset_names_labels_split_and_errors(tmp_path):
    root = tmp_path / "named"
    root.mkdir()
    with tarfile.open(root / "a.tar", "w") as tar:
        for j, name in enumerate(["pear", "apple", "pear", "apple", "pear", "apple"]):
            add(tar, f"k{j}.jpg", png(j)[0])
            add(tar, f"k{j}.cls", name.encode())
    ds = load_dataset(f"webdataset:{root / 'a.tar'}", split=True, ratios="50/0/50", seed=3)
    assert ds.classnames == ["apple", "pear"]
    assert ds.items["label"].tolist() == [1, 0, 1, 0, 1, 0]
    for label in (0, 1):  # stratified: each class of 3 splits as split_counts says
        counts = ds.items.loc[ds.items["label"] == label, "split"].value_counts()
        expected = dict(zip(("train", "val", "test"), split_counts(3, (0.5, 0, 0.5)),
                            strict=True))
        assert {k: v for k, v in expected.items() if v} == counts.to_dict()

    with pytest.raises(ValueError, match="unknown class names 'apple'"):
        load_dataset(f"webdataset:{root}", classnames=["pear"])
    with pytest.raises(FileNotFoundError, match=r"webdataset: expected .*\.tar.*nowhere"):
        load_dataset(f"webdataset:{tmp_path / 'nowhere'}")
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "00000.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="decompress"):
        load_dataset(f"webdataset:{gz}")
    (root / "bad.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ValueError, match="bad.tar is not an uncompressed tar"):
        load_dataset(f"webdataset:{root}")


def write_parquet(root: Path) -> dict[str, np.ndarray]:
    """Two img2dataset parquet shards (row groups of 3); one failed download, one corrupt."""
    root.mkdir(parents=True)
    pixels = {}
    for s in range(2):
        rows = []
        for j in range(7):
            key = f"{s:05d}{j:04d}"
            data, pix = png(50 * s + j)
            status, error = "success", None
            if (s, j) == (0, 4):
                data, status, error = None, "failed_to_download", "HTTP 404"
            elif (s, j) == (1, 0):
                data = BROKEN
            else:
                pixels[f"{s:05d}.parquet/{key}"] = pix
            rows.append({"jpg": data, "txt": f"caption {key}", "key": key, "url": "u",
                         "status": status, "error_message": error, "label": CLASSES[j % 3]})
        pq.write_table(pa.Table.from_pylist(rows), root / f"{s:05d}.parquet", row_group_size=3)
    return pixels


def test_img2dataset_parquet_reads_one_row_group_at_a_time(tmp_path, monkeypatch):
    pixels = write_parquet(tmp_path / "pq")
    ds = load_dataset(f"img2dataset:{tmp_path / 'pq'}")
    assert len(ds) == 14 and ds.classnames == CLASSES
    assert ds.items["sample_id"].iloc[8] == "00001.parquet/000010001"
    assert ds.items["caption"].iloc[8] == "caption 000010001"
    assert ds.items["label"].tolist() == [j % 3 for _ in range(2) for j in range(7)]
    assert ds.description["image_column"] == "jpg" and ds.description["not_success"] == 1

    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, g, **kw: reads.append(g) or original(self, g, **kw))
    errors = {}
    for i, sid in enumerate(ds.items["sample_id"]):
        try:
            np.testing.assert_array_equal(np.asarray(ds.load_image(i)), pixels[sid])
        except OSError as error:
            errors[sid] = str(error)
    assert set(errors) == {"00000.parquet/000000004", "00001.parquet/000010000"}
    assert "failed_to_download" in errors["00000.parquet/000000004"]
    assert "HTTP 404" in errors["00000.parquet/000000004"]
    # in plan order, each of the 3 row groups per shard is read once (the failed row skips none)
    assert reads == [0, 1, 2, 0, 1, 2]
    assert isinstance(ds.reader, ParquetRows)


def test_img2dataset_errors_name_file_and_columns(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    pq.write_table(pa.table({"url": ["u"], "caption": ["c"]}), root / "00000.parquet")
    with pytest.raises(ValueError, match=r"00000.parquet: no binary image column .*'url'"):
        load_dataset(f"img2dataset:{root}")
    (root / "00000.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="00000.parquet is not a readable parquet file"):
        load_dataset(f"img2dataset:{root}")


@pytest.mark.parametrize("layout", ["webdataset", "img2dataset"])
def test_embed_command_on_archives_records_bad_samples(tmp_path, layout):
    if layout == "webdataset":
        pixels = write_webdataset(tmp_path / "data")
        bad = ["00001.tar/000010001.png", "00001.tar/000010002"]
    else:
        pixels = write_parquet(tmp_path / "data")
        bad = ["00000.parquet/000000004", "00001.parquet/000010000"]
    out = tmp_path / "pool"
    result = CliRunner().invoke(app, [
        "embed", "--model-config", str(CONFIG), "--data", f"{layout}:{tmp_path / 'data'}",
        "--out", str(out), "--batch-size", "3", "--shard-size", "5", "--num-workers", "1",
        "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"{len(pixels)} images embedded, 2 failed" in " ".join(result.output.split())
    pool = open_pool(out)
    assert sorted(pool.failures["sample_id"]) == bad
    assert pool.items["sample_id"].tolist() == [s for s in pool.items["sample_id"] if s in pixels]
    assert set(pool.items["sample_id"]) == set(pixels)
    assert pool.caption_activations is not None  # captions came along
    vlm = load_vlm(register_model_config(CONFIG), device="cpu")
    batch = torch.stack([vlm.preprocess(Image.fromarray(pixels[s]))
                         for s in pool.items["sample_id"]])
    expected, _ = vlm.image_activations(batch)
    np.testing.assert_allclose(pool.image_activations[:], expected.numpy(), rtol=1e-5,
                               atol=1e-6)
