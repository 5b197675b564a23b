"""Full disks, read-only folders and interrupted folder swaps leave every file as it was."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from activevlm.runs import RunState, import_labels
from activevlm.utils import io
from activevlm.utils.errors import StorageError
from activevlm.utils.io import (
    atomic_replace_dir,
    atomic_write_json,
    atomic_write_text,
    dumps_strict,
    recover_dir,
)
from tests.procs import tree_digest


def fail_with(code: int):
    def flush(tmp):
        raise OSError(code, "injected")
    return flush


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"),
                                         (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied")])
def test_refused_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, code,
                                                             words):
    target = tmp_path / "state.json"
    target.write_text("old\n")
    monkeypatch.setattr(io, "_flush", fail_with(code))
    with pytest.raises(StorageError, match=f"cannot write {target}: .*{words}"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_label_import_on_a_full_disk_changes_nothing(tmp_path, monkeypatch):
    state = RunState.create(tmp_path / "run", "pools/x", "m", ["cat", "dog"])
    (tmp_path / "l.csv").write_text("sample_id,label\na.png,cat\n")
    before = tree_digest(tmp_path / "run")
    monkeypatch.setattr(io, "_flush", fail_with(errno.ENOSPC))
    with pytest.raises(StorageError, match="state.json: the disk is full"):
        import_labels(state, tmp_path / "l.csv", {"a.png"})
    assert tree_digest(tmp_path / "run") == before


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A small tmpfs at ``where`` (skips the test where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-error tests cover it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_real_full_disk_and_read_only_folder_on_tmpfs(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        state = RunState.create(disk / "run", "pools/x", "m", ["cat", "dog"])
        ids = {f"img_{i:05d}.png" for i in range(20000)}  # state.json would need ~0.5 MB
        pd.DataFrame({"sample_id": sorted(ids), "label": "cat"}).to_csv(tmp_path / "l.csv",
                                                                      index=False)
        before = tree_digest(disk)
        with pytest.raises(StorageError, match="disk is full"):
            import_labels(state, tmp_path / "l.csv", ids)
        assert tree_digest(disk) == before
        assert [p.name for p in (disk / "run").iterdir()] == ["state.json"]
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        (tmp_path / "s.csv").write_text("sample_id,label\nimg_00001.png,dog\n")
        with pytest.raises(StorageError, match="read-only"):
            import_labels(RunState.load(disk / "run"), tmp_path / "s.csv", ids)
        assert tree_digest(disk) == before


def posterior_like(folder: Path, version: str) -> None:
    folder.mkdir(parents=True)
    (folder / "posterior.safetensors").write_text(version)
    (folder / "posterior.json").write_text(version)  # written last: marks it complete


def complete(p: Path) -> bool:
    return (p / "posterior.json").exists()


def test_atomic_replace_dir_swaps_whole_folders(tmp_path):
    folder = tmp_path / "posterior"
    atomic_replace_dir(folder, lambda p: posterior_like(p, "v1"))
    atomic_replace_dir(folder, lambda p: posterior_like(p, "v2"))
    assert (folder / "posterior.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior"]


@pytest.mark.parametrize("leftovers, expected", [
    ({"old": "v1", "new": "v2"}, "v2"),  # killed between the two renames (new layout)
    ({"old": "v1", "tmp": "v2"}, "v2"),  # the same with the older .tmp -> folder swap
    ({"old": "v1", "tmp": None}, "v1"),  # killed while writing: the old one comes back
])
def test_recover_dir_completes_or_rolls_back_a_killed_swap(tmp_path, leftovers, expected):
    folder = tmp_path / "posterior"
    for kind, version in leftovers.items():
        p = tmp_path / f".posterior.abcd{kind}.{kind}"
        if version is None:
            p.mkdir()
            (p / "posterior.safetensors").write_text("half")
        else:
            posterior_like(p, version)
    recover_dir(folder, complete)
    assert (folder / "posterior.json").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior"]


def test_recover_dir_leaves_an_existing_folder_alone_unless_cleaning(tmp_path):
    posterior_like(tmp_path / "posterior", "v1")
    posterior_like(tmp_path / ".posterior.x.tmp", "v2")
    assert recover_dir(tmp_path / "posterior", complete) is None
    assert (tmp_path / ".posterior.x.tmp").exists()  # maybe another writer's
    recover_dir(tmp_path / "posterior", complete, cleanup=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior"]
    assert (tmp_path / "posterior" / "posterior.json").read_text() == "v1"


def test_json_is_strict_nan_and_inf_become_null(tmp_path):
    obj = {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}, "e": "x"}
    assert json.loads(dumps_strict(obj)) == {"a": None, "b": [1.5, None], "c": {"d": None},
                                             "e": "x"}
    atomic_write_json(tmp_path / "x.json", obj)
    assert "NaN" not in (tmp_path / "x.json").read_text()
    shutil.rmtree(tmp_path / "x.json", ignore_errors=True)


def fail_at(n: int, code: int = errno.ENOSPC):
    """An fsync that fails on its ``n``-th call (the ``n``-th file written)."""
    real, calls = io._flush, []

    def flush(tmp):
        calls.append(tmp)
        if len(calls) == n:
            raise OSError(code, "injected")
        real(tmp)
    return flush


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from tests.toy import toy_pool

    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch"), per=5)


# a round writes queue.parquet, queue.csv, queue.labelstudio.json, labelstudio_config.xml,
# scores.parquet, then state.json: a full disk at any of them leaves the run as it was
@pytest.mark.parametrize("n", range(1, 7))
def test_select_on_a_full_disk_leaves_no_round_behind(toy, tmp_path, monkeypatch, n):
    from activevlm.runs.select import SelectConfig, select_round

    state = RunState.create(tmp_path / "run", str(toy.path), toy.model_id, toy.classnames)
    config = SelectConfig(budget=3, strategy="entropy")
    select_round(toy, state, config, progress=False)
    state.queued.clear()  # round 0's items labelled elsewhere: round 1 may be selected
    state.save()
    before = tree_digest(tmp_path / "run")
    monkeypatch.setattr(io, "_flush", fail_at(n))
    with pytest.raises(StorageError, match="disk is full"):
        select_round(toy, state, config, progress=False)
    assert tree_digest(tmp_path / "run") == before
    assert state.round == 1 and not state.queued  # the object is as it was too
    monkeypatch.undo()
    assert select_round(toy, state, config, progress=False).round == 1  # and can go on


@pytest.mark.parametrize("n", [1, 6])  # the first round file, state.json
def test_a_failed_select_keeps_the_loops_failure_file_and_nothing_else(toy, tmp_path,
                                                                       monkeypatch, n):
    """The loop writes round_NNN/failure.json before it selects: the round's files are
    moved in beside it, and a failed select takes out only its own files again."""
    from activevlm.runs.select import SelectConfig, select_round

    state = RunState.create(tmp_path / "run", str(toy.path), toy.model_id, toy.classnames)
    atomic_write_json(state.dir.failure(0), {"source": "msp"})
    before = tree_digest(tmp_path / "run")
    monkeypatch.setattr(io, "_flush", fail_at(n))
    with pytest.raises(StorageError, match="disk is full"):
        select_round(toy, state, SelectConfig(budget=3, strategy="random"), progress=False)
    assert tree_digest(tmp_path / "run") == before
    monkeypatch.undo()
    select_round(toy, state, SelectConfig(budget=3, strategy="random"), progress=False)
    assert json.loads(state.dir.failure(0).read_text()) == {"source": "msp"}
    assert (state.dir.queue(0)).is_file() and state.round == 1


def test_select_deletes_the_staged_round_a_killed_select_left(toy, tmp_path):
    from activevlm.runs.select import SelectConfig, select_round

    state = RunState.create(tmp_path / "run", str(toy.path), toy.model_id, toy.classnames)
    left = tmp_path / "run" / ".round_000.dead0000.stage"
    left.mkdir()
    (left / "queue.parquet").write_bytes(b"half")
    select_round(toy, state, SelectConfig(budget=3, strategy="random"), progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["round_000", "state.json"]
    assert sorted(p.name for p in (tmp_path / "run" / "round_000").iterdir()) == [
        "labelstudio_config.xml", "queue.csv", "queue.labelstudio.json", "queue.parquet",
        "scores.parquet"]


def safetensors_full_disk(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')


@pytest.mark.parametrize("module", ["activevlm.models.head", "activevlm.bayes.posterior"])
def test_finetune_on_a_full_disk_is_one_paragraph_and_changes_nothing(toy, tmp_path,
                                                                      monkeypatch, module):
    """safetensors reports a full disk as its own SafetensorError: it is a StorageError
    naming the file, and neither the head nor the posterior of the run changes (the head
    is renamed into place only once the posterior is)."""
    import importlib

    from typer.testing import CliRunner

    from activevlm.cli.main import app
    from activevlm.runs.rundir import RunDir, base_posterior

    state = RunState.create(tmp_path / "run", str(toy.path), toy.model_id, toy.classnames)
    items = toy.items.iloc[:30]
    state.labels = {s: int(y) for s, y in zip(items["sample_id"], items["label"], strict=True)}
    state.save()
    base_posterior(RunDir(state.path), toy, progress=False, log=lambda *a: None)
    before = tree_digest(tmp_path)
    monkeypatch.setattr(importlib.import_module(module), "save_file", safetensors_full_disk)
    res = CliRunner().invoke(app, ["finetune", "--run", str(state.path), "--epochs", "2",
                                   "--device", "cpu", "--no-progress"])
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), out
    assert "disk is full" in out and "SafetensorError" not in out, out
    assert tree_digest(tmp_path) == before
