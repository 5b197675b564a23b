"""Every user path is resolved before any check or write: ``x/../run`` with ``x`` missing,
a symbolic link and a relative path all name the run they point to, on ``select``,
``labels import``, ``finetune``, ``loop`` and ``bench``; no stray folder is ever made."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from activevlm.cli.main import app
from activevlm.runs import RunState, import_labels
from activevlm.runs.select import SelectConfig, select_round
from tests.procs import tree_digest
from tests.toy import toy_pool

runner = CliRunner()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch"), per=10)


def labelled_run(pool, path, n_labels: int = 20, queue: bool = True) -> RunState:
    """A run with ``n_labels`` labels and (``queue``) one round whose items await labels."""
    state = RunState.create(path, str(pool.path), pool.model_id, pool.classnames,
                            pool_checksum=pool.sample_id_checksum)
    items = pool.items.iloc[:n_labels]
    state.labels = {s: int(y) for s, y in zip(items["sample_id"], items["label"], strict=True)}
    state.save()
    if queue:
        select_round(pool, state, SelectConfig(budget=4, strategy="random"), progress=False)
    return state


def label_csv(pool, path, rows) -> None:
    items = pool.items.iloc[rows]
    pd.DataFrame({"sample_id": items["sample_id"],
                  "label": [pool.classnames[y] for y in items["label"]]}).to_csv(path, index=False)


def through_missing(tmp_path, name: str) -> str:
    """``tmp_path/x/../name`` as the user typed it, with ``x`` missing."""
    assert not (tmp_path / "x").exists()
    return f"{tmp_path}/x/../{name}"


def select_args(pool, run: str, *extra: str) -> list[str]:
    return ["select", "--pool", str(pool.path), "--run", run, "--strategy", "random",
            "--budget", "3", "--no-progress", *extra]


def test_select_through_a_missing_component_refuses_the_pending_run_and_changes_nothing(
        pool, tmp_path):
    """The issue's data loss: the run was taken for a new one, its 20 labels and round 0
    overwritten. Now it is the existing run (pending items: refused, nothing written)."""
    labelled_run(pool, tmp_path / "run")
    before = tree_digest(tmp_path)
    res = runner.invoke(app, select_args(pool, through_missing(tmp_path, "run")))
    assert res.exit_code == 1 and "still await labels" in res.output, res.output
    assert tree_digest(tmp_path) == before
    assert not (tmp_path / "x").exists()


def test_select_through_a_missing_component_continues_the_run(pool, tmp_path):
    state = labelled_run(pool, tmp_path / "run")
    queue0 = (tmp_path / "run" / "round_000" / "queue.parquet").read_bytes()
    res = runner.invoke(app, select_args(pool, through_missing(tmp_path, "run"), "--force"))
    assert res.exit_code == 0, res.output
    after = RunState.load(tmp_path / "run")
    assert after.labels == state.labels and after.round == 2
    assert (tmp_path / "run" / "round_000" / "queue.parquet").read_bytes() == queue0
    assert not (tmp_path / "x").exists()


def test_select_through_a_symlink_and_a_relative_path_is_the_same_run(pool, tmp_path,
                                                                      monkeypatch):
    state = labelled_run(pool, tmp_path / "real" / "run")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    res = runner.invoke(app, select_args(pool, f"{tmp_path}/link/run", "--force"))
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path / "real")
    res = runner.invoke(app, select_args(pool, "run", "--force"))
    assert res.exit_code == 0, res.output
    after = RunState.load(tmp_path / "real" / "run")
    assert after.round == 3 and after.labels == state.labels
    assert after.path == (tmp_path / "real" / "run").resolve()
    queues = [r["queue"] for r in after.rounds]
    assert all(q.startswith(str((tmp_path / "real" / "run").resolve())) for q in queues)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_library_resolves_the_run_path(pool, tmp_path):
    labelled_run(pool, tmp_path / "run", queue=False)
    state = RunState.load(through_missing(tmp_path, "run"))
    assert state.path == tmp_path / "run" and len(state.labels) == 20
    label_csv(pool, tmp_path / "l.csv", range(20, 25))
    import_labels(state, through_missing(tmp_path, "l.csv"), set(pool.items["sample_id"]))
    assert len(RunState.load(tmp_path / "run").labels) == 25
    assert not (tmp_path / "x").exists()


def test_labels_import_with_dotdot_file_and_run(pool, tmp_path):
    labelled_run(pool, tmp_path / "run")
    queued = RunState.load(tmp_path / "run").queued
    rows = [int(i) for i in pool.items.index[pool.items["sample_id"].isin(queued)]]
    label_csv(pool, tmp_path / "l.csv", rows)
    res = runner.invoke(app, ["labels", "import", through_missing(tmp_path, "l.csv"), "--run",
                              through_missing(tmp_path, "run")])
    assert res.exit_code == 0, res.output
    after = RunState.load(tmp_path / "run")
    assert len(after.labels) == 24 and not after.queued
    assert not (tmp_path / "x").exists()


def test_finetune_with_dotdot_run_writes_the_run_head(pool, tmp_path):
    labelled_run(pool, tmp_path / "run", n_labels=30, queue=False)
    res = runner.invoke(app, ["finetune", "--run", through_missing(tmp_path, "run"),
                              "--epochs", "2", "--device", "cpu", "--refit", "none",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "head.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_loop_with_dotdot_run_writes_into_the_named_folder(pool, tmp_path):
    res = runner.invoke(app, ["loop", "--pool", str(pool.path), "--run",
                              through_missing(tmp_path, "loop"), "--strategy", "random",
                              "--rounds", "1", "--budget", "3", "--epochs", "2", "--target",
                              "sketch", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert RunState.load(tmp_path / "loop" / "seed0").round == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]


def test_bench_with_dotdot_config_and_out(pool, tmp_path, monkeypatch):
    cfg = {"name": "t", "seeds": [0], "strategies": ["random-untargeted"],
           "loop": {"rounds": 1, "select": {"budget": 3}, "finetune": {"max_epochs": 2}},
           "datasets": [{"name": "toy", "pool": os.path.relpath(pool.path, tmp_path)}]}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)  # the pool path in the config is relative to here
    res = runner.invoke(app, ["bench", "x/../b.yaml", "--out", "x/../out", "--no-plot",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == 2  # rounds 0 and 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.yaml", "out"]


def test_a_symlink_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    res = runner.invoke(app, ["status", "--run", str(tmp_path / "a")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert str(tmp_path / "a") in " ".join(res.output.split()), res.output
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["a", "b"]'


def test_a_run_held_under_one_name_is_locked_under_its_symlinked_name(tmp_path):
    """The lock is the resolved folder's: a writer that names the run through a symlink
    (or ``x/..``) waits for, and after its wait is refused by, the holder of the real name."""
    from activevlm.runs.errors import RunLockedError
    from activevlm.runs.lock import run_lock
    from tests.procs import gate, open_gate

    (tmp_path / "real" / "run").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    holder = gate(tmp_path / "real" / "run")
    try:
        for name in (tmp_path / "link" / "run", through_missing(tmp_path, "real/run")):
            with pytest.raises(RunLockedError, match=f"pid {holder.pid}"), \
                    run_lock(name, wait=0.3):
                pass
        assert not (tmp_path / "x").exists()
    finally:
        open_gate(holder)
