"""One writer per run: the lock file, stale locks, and the issue's concurrent pairs run as
real processes at once (nothing may be lost)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pandas as pd
import pytest

from activevlm.runs import RunState
from activevlm.runs.errors import RunLockedError
from activevlm.runs.lock import LOCK_FILE, read_holder, run_lock
from tests.procs import cli_env, gate, open_gate, read_until, run_cli, start_cli, tree_digest
from tests.toy import toy_pool

WAIT = {"ACTIVEVLM_LOCK_WAIT": "300"}  # the second writer waits for the first


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return toy_pool(tmp_path_factory.mktemp("toy"), domains=("photo", "sketch", "art"), per=10)


def new_run(pool, path) -> RunState:
    return RunState.create(path, str(pool.path), pool.model_id, pool.classnames,
                           pool_checksum=pool.sample_id_checksum)


def label_csv(pool, path, rows) -> None:
    items = pool.items.iloc[rows]
    pd.DataFrame({"sample_id": items["sample_id"],
                  "label": [pool.classnames[y] for y in items["label"]]}).to_csv(path, index=False)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_holder_is_reentrant_and_released(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, command="test"):
        holder = read_holder(run)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with run_lock(run):  # re-entrant in one process (loop -> labels import)
            assert (run / LOCK_FILE).exists()
        assert (run / LOCK_FILE).exists()
    assert not (run / LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                             "command": "activevlm select"}))
    with run_lock(run, wait=0):
        assert read_holder(run)["pid"] == os.getpid()


def test_live_holder_on_another_host_or_pid_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere",
                                             "command": "activevlm loop"}))
    with pytest.raises(RunLockedError, match="host elsewhere.*activevlm loop"), \
            run_lock(run, wait=0.3):
        pass
    assert read_holder(run)["host"] == "elsewhere"  # not ours to remove


def test_every_writer_command_refuses_a_held_run(pool, tmp_path):
    """select, labels import, finetune and loop all take the lock (held by another process),
    stop with a message naming the holder, and change no file."""
    run, loop_run = tmp_path / "run", tmp_path / "loopout" / "seed0"
    state = new_run(pool, run)
    state.labels = {sid: int(y) for sid, y in zip(pool.items["sample_id"][:4],
                                                  pool.items["label"][:4], strict=True)}
    state.save()
    label_csv(pool, tmp_path / "l.csv", [5, 6])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom activevlm.runs.lock import run_lock\n"
         f"with run_lock({str(run)!r}, command='holder'), "
         f"run_lock({str(loop_run)!r}, command='holder'):\n"
         "    print('held', flush=True); time.sleep(600)"],
        env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree_digest(tmp_path)
        for args in (
            ["select", "--pool", str(pool.path), "--run", str(run), "--strategy", "random",
             "--budget", "3", "--no-progress"],
            ["labels", "import", str(tmp_path / "l.csv"), "--run", str(run)],
            ["finetune", "--run", str(run), "--epochs", "2", "--no-progress"],
            ["loop", "--pool", str(pool.path), "--run", str(loop_run.parent), "--strategy",
             "random", "--rounds", "1", "--budget", "3", "--seeds", "0", "--target", "sketch",
             "--no-progress"],
        ):
            code, out = run_cli(args, ACTIVEVLM_LOCK_WAIT="0.5")
            assert code == 1 and "Traceback" not in out, out
            assert f"pid {holder.pid}" in out and "holder" in out, out
        assert tree_digest(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def at_once(run, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Start ``commands`` while another process holds ``run``'s lock, so each has read the
    run before it waits; open the gate once all wait; return (exit status, output) each."""
    holder = gate(run)
    procs = [start_cli(args, **WAIT) for args in commands]
    outs = [read_until(p, "waiting up to") for p in procs]
    open_gate(holder)
    return [(p.wait(timeout=600), o + p.stdout.read()) for p, o in zip(procs, outs,
                                                                       strict=True)]


def test_two_label_imports_at_once_keep_all_labels(pool, tmp_path):
    run = tmp_path / "run"
    new_run(pool, run)
    label_csv(pool, tmp_path / "a.csv", range(0, 50))
    label_csv(pool, tmp_path / "b.csv", range(50, 100))
    results = at_once(run, [["labels", "import", str(tmp_path / f), "--run", str(run)]
                            for f in ("a.csv", "b.csv")])
    assert [code for code, _ in results] == [0, 0], results
    assert all("50 new" in out for _, out in results)
    labels = RunState.load(run).labels
    assert len(labels) == 100
    truth = dict(zip(pool.items["sample_id"], pool.items["label"], strict=True))
    assert all(labels[s] == truth[s] for s in labels)


def test_select_and_label_import_at_once_lose_nothing(pool, tmp_path):
    run = tmp_path / "run"
    new_run(pool, run)
    label_csv(pool, tmp_path / "a.csv", range(0, 90))
    results = at_once(run, [
        ["select", "--pool", str(pool.path), "--run", str(run), "--strategy", "entropy",
         "--budget", "10", "--no-progress"],
        ["labels", "import", str(tmp_path / "a.csv"), "--run", str(run)]])
    assert [code for code, _ in results] == [0, 0], results
    state = RunState.load(run)
    assert len(state.labels) == 90 and state.round == 1
    queue = pd.read_parquet(run / "round_000" / "queue.parquet")["sample_id"]
    assert set(state.queued) == set(queue) - set(state.labels)


def test_two_selects_on_one_run_make_two_rounds(pool, tmp_path):
    run = tmp_path / "run"
    new_run(pool, run)
    args = ["select", "--pool", str(pool.path), "--run", str(run), "--strategy", "entropy",
            "--budget", "8", "--force", "--no-progress"]
    results = at_once(run, [args, args])
    assert [code for code, _ in results] == [0, 0], results
    state = RunState.load(run)
    q0, q1 = (set(pd.read_parquet(run / f"round_00{r}" / "queue.parquet")["sample_id"])
              for r in (0, 1))
    assert state.round == 2 and len(q0) == len(q1) == 8 and not q0 & q1
    assert set(state.queued) == q0 | q1  # both announced queues are in the run


def test_two_selects_without_force_write_one_round_and_the_second_refuses(pool, tmp_path):
    """C1: both have started before either holds the lock; the pending-items check runs
    under the lock, so the second sees the first's round and refuses it by name."""
    run = tmp_path / "run"
    new_run(pool, run)
    args = ["select", "--pool", str(pool.path), "--run", str(run), "--strategy", "entropy",
            "--budget", "8", "--no-progress"]
    results = sorted(at_once(run, [args, args]))
    assert [code for code, _ in results] == [0, 1], results
    refused = " ".join(results[1][1].split())
    assert "8 item(s) queued in round(s) 0 still await labels" in refused, refused
    assert "--force" in refused and "Traceback" not in refused
    state = RunState.load(run)
    assert state.round == 1 and len(state.queued) == 8
    assert sorted(p.name for p in run.iterdir()) == ["round_000", "state.json"]


def test_select_waiting_while_finetune_writes_scores_with_the_new_head(pool, tmp_path):
    """C2: a select that started before ``finetune`` wrote a new head and posterior scores
    with them once it holds the lock: its round is the round of a select run afterwards."""
    from activevlm.runs.rundir import RunDir, base_posterior

    run, ref = tmp_path / "run", tmp_path / "ref"
    state = new_run(pool, run)
    items = pool.items.iloc[:40]
    state.labels = {s: int(y) for s, y in zip(items["sample_id"], items["label"], strict=True)}
    state.save()
    base_posterior(RunDir(run), pool, progress=False, log=lambda *a: None)
    shutil.copytree(run, ref)
    finetune = ["finetune", "--epochs", "3", "--device", "cpu", "--no-progress"]
    select = ["select", "--pool", str(pool.path), "--strategy", "bald", "--budget", "6",
              "--draws", "8", "--no-progress"]
    holder = gate(run, then=[*finetune, "--run", str(run)])
    waiting = start_cli([*select, "--run", str(run)], **WAIT)
    out = read_until(waiting, "waiting up to")
    open_gate(holder)  # finetune runs inside the hold, then lets go
    assert waiting.wait(timeout=600) == 0
    out = " ".join((out + waiting.stdout.read()).split())
    assert "scoring with the run's fine-tuned head" in out, out
    for args in (finetune, select):  # the same two commands one after the other
        code, ref_out = run_cli([*args, "--run", str(ref)])
        assert code == 0, ref_out
    for name in ("head.safetensors", "posterior/posterior.safetensors",
                 "round_000/queue.parquet", "round_000/scores.parquet"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


def test_empty_lock_file_cannot_be_left_and_temp_files_of_a_killed_writer_go(tmp_path):
    run = tmp_path / "run"
    (run / "round_001").mkdir(parents=True)
    orphan = run / "round_001" / ".scores.a1b2c3.tmp.parquet"
    orphan.write_bytes(b"half")
    with run_lock(run, wait=0):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not orphan.exists()
    assert sorted(p.name for p in run.iterdir()) == ["round_001"]
