"""Exact resume: the issue's on-disk crash states, relative and moved pools, and a reduced
kill -9 campaign (the full one is benchmarks/crash_campaign.py)."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from activevlm.cli.main import app
from activevlm.models import load_vlm, register_model_config
from activevlm.pool import embed_dataset, layout
from activevlm.runs import RunState
from tests.procs import ROOT, tree_digest
from tests.toy import CONFIGS, toy_dataset, toy_pool

runner = CliRunner()


def ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)


def answer(pool, run: Path, round_index: int, path: Path) -> Path:
    queue = pd.read_parquet(run / f"round_{round_index:03d}" / "queue.parquet")
    truth = pool.items.set_index("sample_id")["label"]
    pd.DataFrame({"sample_id": queue["sample_id"],
                  "label": [pool.classnames[truth[s]] for s in queue["sample_id"]]}).to_csv(
        path, index=False)
    return path


def select_args(pool, run: Path) -> list[str]:
    return ["select", "--pool", str(pool.path), "--run", str(run), "--strategy", "epig",
            "--target", "sketch", "--budget", "6", "--draws", "8", "--no-progress"]


@pytest.mark.parametrize("staged", ["new", "tmp"])
def test_kill_between_posterior_renames_keeps_the_fine_tuned_posterior(pool, tmp_path, staged):
    """The issue's state: posterior/ renamed away, the refitted one not yet renamed in. The
    next select must use the refitted posterior (it silently refitted a fresh one)."""
    run = tmp_path / "run"
    ok(select_args(pool, run))
    ok(["labels", "import", str(answer(pool, run, 0, tmp_path / "l.csv")), "--run", str(run)])
    ok(["finetune", "--run", str(run), "--epochs", "3", "--no-progress"])
    crashed = tmp_path / "crashed"
    shutil.copytree(run, crashed)
    fine_tuned = tree_digest(run / "posterior")
    ok(select_args(pool, run))  # the uninterrupted next round

    (crashed / "posterior").rename(crashed / ".posterior.1a2b3c4d.old")
    shutil.copytree(run / "posterior", crashed / f".posterior.5e6f7a8b.{staged}")
    (crashed / ".posterior.1a2b3c4d.old" / "posterior.json").write_text(  # must not be used
        (crashed / ".posterior.1a2b3c4d.old" / "posterior.json").read_text())
    ok(select_args(pool, crashed))
    assert pd.read_parquet(crashed / "round_001" / "queue.parquet").equals(
        pd.read_parquet(run / "round_001" / "queue.parquet"))
    assert {Path(k).name: v for k, v in tree_digest(crashed / "posterior").items()} == \
        {Path(k).name: v for k, v in fine_tuned.items()}
    assert sorted(p.name for p in crashed.iterdir() if p.name.startswith(".posterior")) == []


def strict_rows(path: Path) -> list[dict]:
    def refuse(token):
        raise ValueError(f"{path} holds the non-JSON token {token}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_loop_resumes_exactly_after_losing_its_last_metrics_line(pool, tmp_path):
    def loop(out: Path, rounds: int) -> None:
        ok(["loop", "--pool", str(pool.path), "--run", str(out), "--strategy", "entropy",
            "--rounds", str(rounds), "--budget", "4", "--epochs", "3", "--seeds", "0",
            "--target", "sketch", "--no-progress"])

    loop(tmp_path / "a", 2)
    a = tmp_path / "a" / "seed0"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = tmp_path / "b" / "seed0"
    lines = (b / "metrics.jsonl").read_text().splitlines(keepends=True)
    (b / "metrics.jsonl").write_text("".join(lines[:-1]))
    loop(tmp_path / "b", 2)
    loop(tmp_path / "c", 1)  # --rounds 1 then --rounds 2
    loop(tmp_path / "c", 2)
    c = tmp_path / "c" / "seed0"
    for other in (b, c):
        for r in (0, 1):
            name = f"round_{r:03d}/oracle_labels.csv"
            assert (other / name).read_bytes() == (a / name).read_bytes()
            assert len(pd.read_csv(other / name)) == 4  # it became header-only
        assert without_timings(strict_rows(other / "metrics.jsonl")) == \
            without_timings(strict_rows(a / "metrics.jsonl"))
    assert strict_rows(a / "metrics.jsonl")[1]["target_share"] is not None


def test_rerun_embed_removes_a_killed_runs_temp_file(tmp_path):
    ds = toy_dataset(tmp_path / "images", per=4)
    vlm = load_vlm(register_model_config(CONFIGS / "tiny-clip.json"), device="cpu")
    reference = embed_dataset(ds, vlm, tmp_path / "ref", shard_size=8, progress=False)
    out = tmp_path / "pool"
    embed_dataset(ds, vlm, out, shard_size=8, progress=False)
    manifest = json.loads((out / layout.MANIFEST).read_text())  # as if killed in shard 2
    manifest["status"] = "incomplete"
    (out / layout.MANIFEST).write_text(json.dumps(manifest))
    layout.shard_file(out, "marker", 2).unlink()
    orphan = out / layout.SHARD_DIR / ".image_act-00002.x1y2z3.tmp.npy"
    orphan.write_bytes(np.zeros(8 * 64, np.float32).tobytes())
    pool = embed_dataset(ds, vlm, out, shard_size=8, progress=False)
    assert not orphan.exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    np.testing.assert_array_equal(np.asarray(pool.image_activations),
                                  np.asarray(reference.image_activations))


def test_relative_pool_path_is_stored_absolute_and_a_moved_pool_is_re_pointed(
        pool, tmp_path, monkeypatch):
    shutil.copytree(pool.path, tmp_path / "pools" / "p")
    monkeypatch.chdir(tmp_path)
    ok(["select", "--pool", "pools/p", "--run", "run", "--strategy", "entropy",
        "--budget", "4", "--no-progress"])
    state = RunState.load(tmp_path / "run")
    assert state.pool == str(tmp_path / "pools" / "p")
    answer(pool, tmp_path / "run", 0, tmp_path / "l.csv")
    monkeypatch.chdir(ROOT)  # another directory: the run still finds its pool
    ok(["labels", "import", str(tmp_path / "l.csv"), "--run", str(tmp_path / "run")])

    (tmp_path / "pools" / "p").rename(tmp_path / "moved")
    result = runner.invoke(app, ["status", "--run", str(tmp_path / "run")])
    assert result.exit_code == 0  # status reads state only
    result = runner.invoke(app, ["finetune", "--run", str(tmp_path / "run"), "--epochs", "2",
                                 "--no-progress"])
    assert result.exit_code == 1 and "--pool" in result.output and "moved or" in result.output
    ok(["finetune", "--run", str(tmp_path / "run"), "--epochs", "2", "--no-progress",
        "--pool", str(tmp_path / "moved")])
    assert RunState.load(tmp_path / "run").pool == str(tmp_path / "moved")

    other = toy_pool(tmp_path / "other", domains=("photo",), per=3)
    result = runner.invoke(app, ["status", "--run", str(tmp_path / "run"), "--pool",
                                 str(other.path)])
    assert result.exit_code == 1 and "sample-id checksum" in result.output
    assert RunState.load(tmp_path / "run").pool == str(tmp_path / "moved")


def test_reduced_kill_campaign_recovers_exactly(tmp_path, monkeypatch):
    """Two kill -9 trials per command on a small demo world (20 each: the benchmark)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its processes import it by name
    campaign = importlib.import_module("crash_campaign")
    pool_dir = campaign.prepare_base(tmp_path, per_class=4, seed=0, log=lambda *a: None)
    df = campaign.campaign(list(campaign.COMMANDS), 2, tmp_path, pool_dir, seed=1,
                           log=lambda *a: None)
    assert (df["exact recoveries"] == 2).all(), df.to_string()
    assert df["killed mid-run"].sum() >= 6, df.to_string()
