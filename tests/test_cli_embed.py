"""``activevlm embed`` end to end on generated images with the tiny CLIP config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from activevlm.cli.main import app
from activevlm.data import load_dataset
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import open_pool

torch.set_num_threads(2)
CONFIG = Path(__file__).parent / "fixtures" / "model_configs" / "tiny-clip.json"
runner = CliRunner()


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("apple", "pear"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
                root / c / f"{i}.jpg")
    (root / "pear" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_embed_command_writes_a_pool_and_reruns_as_noop(tmp_path):
    images = make_folder(tmp_path / "images")
    out = tmp_path / "pools" / "fruit"
    args = ["embed", "--model-config", str(CONFIG), "--data", f"folder:{images}",
            "--out", str(out), "--batch-size", "3", "--shard-size", "4", "--num-workers", "1",
            "--device", "cpu", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"pool ready at {out}" in text
    assert "10 images embedded, 1 failed, 3 shards" in text
    assert "failures.parquet" in text

    pool = open_pool(out)
    vlm = load_vlm(register_model_config(CONFIG), device="cpu")
    assert pool.model_id == vlm.model_id
    assert list(pool.failures["sample_id"]) == ["pear/broken.jpg"]
    ds = load_dataset(f"folder:{images}")
    ok = [i for i, s in enumerate(ds.items["sample_id"]) if s != "pear/broken.jpg"]
    act, _ = vlm.image_activations(torch.stack([vlm.preprocess(ds.load_image(i)) for i in ok]))
    np.testing.assert_allclose(pool.image_activations[:], act.numpy(), rtol=1e-5, atol=1e-6)

    mtime = (out / "shards" / "image_act-00000.npy").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "shards" / "image_act-00000.npy").stat().st_mtime_ns == mtime


def test_embed_command_reports_errors_without_traceback(tmp_path):
    images = make_folder(tmp_path / "images")
    result = runner.invoke(app, ["embed", "--model", "no-such-model", "--data",
                                 f"folder:{images}", "--out", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "error:" in result.output and "no-such-model" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    missing = runner.invoke(app, ["embed", "--model-config", str(CONFIG), "--data",
                                  f"folder:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "q")])
    assert missing.exit_code == 1 and "nowhere" in missing.output
