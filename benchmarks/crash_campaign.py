"""Crash and bad-input campaign: kill -9 at random moments, concurrent commands, user
paths through ``..``/symlinks/relative folders, and a corpus of bad inputs; one table.

    OMP_NUM_THREADS=1 python benchmarks/crash_campaign.py [--trials 20] [--per-class 100]
        [--commands embed,select,labels-import,finetune,loop] [--seed 0] [--work DIR]
        [--embed-images 128] [--parts kill,concurrency,paths,bad-inputs]

Every trial ends in one outcome, counted per group (table columns): **clear** (refused
with one paragraph naming the culprit, no library text, nothing changed), **handled**
(done right: an exact recovery after a kill, a concurrent pair that lost nothing, a path
that named the right run), **traceback**, **unclear** (refused, but the paragraph misses
the culprit or quotes a library), **silent** (exit 0 with a wrong result), **data lost**
(files that had to stay changed, or a recovery that differs). The bad-input corpus is
``tests/test_bad_inputs.py``'s ``CASES`` (on its toy world); paths and concurrency run on
the same toy pool, concurrency as real processes (``tests/procs.py``). Exit status 0 when
every trial is clear or handled.

The kill part:

Uses the demo world (``--per-class`` images per class and domain; the default reuses the
cached demo pool). Per command: a warm-up run (first runs fill caches), one uninterrupted
reference run (timed), then ``--trials``
trials that start the same command on a fresh copy of the starting state, SIGKILL it after
a uniform random fraction of the reference time, rerun it to completion (``select`` only if
the killed run had not finished its round: a finished ``select`` is not rerun, it would
queue the next round) and compare every file of the run (pool for ``embed``) with the
reference: bytewise, except timings (``seconds`` fields, the pool's ``created`` time).
Leftover temporary files or staged folders count as differences (a lock left by a killed
process is not compared: the next writer takes a stale lock over). Commands run in
processes forked from a clean fork server that has imported activevlm once (no thread pool
started before a fork), exactly as ``activevlm ARGS``.
Prints one table row per command: trials, killed mid-run, exact recoveries.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the corpus and process helpers live in tests/

from activevlm.cli.main import app  # noqa: E402
from activevlm.demo.pool import demo_pool  # noqa: E402
from activevlm.runs import RunState  # noqa: E402

COMMANDS = ("embed", "select", "labels-import", "finetune", "loop")
PARTS = ("kill", "concurrency", "paths", "bad-inputs")
OUTCOMES = ("clear", "handled", "traceback", "unclear", "silent", "data lost")
GROUPS = (  # bad-input case id prefix -> table group
    ("csv", "label files"), ("label-file", "label files"), ("ls-", "label files"),
    ("jsonmin", "label files"), ("state", "run state"), ("status", "run state"),
    ("run-pool", "run state"), ("repoint", "run state"), ("finetune-no", "run state"),
    ("posterior", "posteriors, heads"), ("run-head", "posteriors, heads"),
    ("pool", "pools"), ("select", "options"), ("loop", "options"), ("finetune", "options"),
    ("bench", "bench configs"), ("embed", "embedding inputs"))
TIMING_KEYS = {"seconds", "select_seconds", "finetune_seconds", "eval_seconds", "created"}


def _child(args: list[str], log: str | None) -> None:
    """Body of a command process: ``activevlm ARGS`` with its output appended to ``log``."""
    fd = os.open(log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    app(args, prog_name="activevlm")


_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["activevlm.cli.main", "activevlm.runs", "activevlm.loop"])


def run_forked(args: list[str], kill_after: float | None = None,
               log: Path | None = None) -> tuple[int | None, float]:
    """Run ``activevlm ARGS`` in a process forked from the fork server; SIGKILL it after
    ``kill_after`` seconds. Returns (exit status, or None if it was killed; seconds)."""
    start = time.perf_counter()
    proc = _CONTEXT.Process(target=_child, args=(args, None if log is None else str(log)))
    proc.start()
    proc.join(kill_after)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        return None, time.perf_counter() - start
    return proc.exitcode, time.perf_counter() - start


def _normalise(path: Path, data: bytes) -> bytes:
    """File content without timings (JSON files and JSON lines only)."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING_KEYS}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    if path.suffix == ".json" and path.name != "queue.labelstudio.json":
        return json.dumps(strip(json.loads(data)), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        return b"\n".join(json.dumps(strip(json.loads(line)), sort_keys=True).encode()
                          for line in data.splitlines() if line)
    return data


def fingerprint(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 of the content without timings}`` of every file, with the
    trial's own folder name replaced (paths recorded in state.json). A lock left by a killed
    process is not compared: the next command takes such a stale lock over."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".lock":
            data = p.read_bytes().replace(str(folder.parent).encode(), b"<WORK>")
            out[str(p.relative_to(folder))] = hashlib.sha256(_normalise(p, data)).hexdigest()
    return out


@dataclass
class Command:
    """How to run one command from a fresh copy of its starting state."""

    name: str
    prepare: Callable[[Path], None]  # writes the starting state into an empty folder
    args: Callable[[Path], list[str]]
    output: Callable[[Path], Path]  # the folder whose files must match the reference
    finished: Callable[[Path], bool] = field(default=lambda work: False)  # skip the rerun


def build_commands(base: Path, pool_dir: Path, image_dir: Path) -> dict[str, Command]:
    """The five commands on the demo pool at ``pool_dir``; ``base`` holds shared inputs."""
    pool = str(pool_dir)

    def run_with(start: str) -> Callable[[Path], None]:
        return lambda work: shutil.copytree(base / start, work / "run")

    select = ["--pool", pool, "--strategy", "epig", "--target", "clipart", "--budget", "20",
              "--draws", "16", "--n-targets", "64", "--no-progress"]
    return {
        "embed": Command(
            "embed", lambda work: None,
            lambda work: ["embed", "--data", f"manifest:{base / 'embed.csv'}", "--model",
                          "activevlm-demo", "--shard-size", "32", "--batch-size", "16",
                          "--device", "cpu", "--out", str(work / "pool"), "--no-progress"],
            lambda work: work / "pool"),
        "select": Command(
            "select", run_with("run_labelled0"),
            lambda work: ["select", "--run", str(work / "run"), *select],
            lambda work: work / "run",
            finished=lambda work: RunState.load(work / "run").round >= 2),
        "labels-import": Command(
            "labels-import", run_with("run_round1"),
            lambda work: ["labels", "import", str(base / "labels_round1.csv"), "--run",
                          str(work / "run")],
            lambda work: work / "run"),
        "finetune": Command(
            "finetune", run_with("run_labelled"),
            lambda work: ["finetune", "--run", str(work / "run"), "--epochs", "8", "--device",
                          "cpu", "--no-progress"],
            lambda work: work / "run"),
        "loop": Command(
            "loop", lambda work: shutil.copytree(base / "loop_start", work / "loop"),
            lambda work: ["loop", "--pool", pool, "--run", str(work / "loop"), "--strategy",
                          "epig", "--rounds", "2", "--budget", "10", "--draws", "16",
                          "--n-targets", "64", "--epochs", "5", "--seeds", "0",
                          "--target", "clipart", "--no-progress"],
            lambda work: work / "loop"),
    }


def prepare_base(base: Path, per_class: int, seed: int, log: Callable = print,
                 embed_images: int = 128) -> Path:
    """Starting states shared by the trials (``embed`` embeds ``embed_images`` random images
    of the world, in shards of 32); returns the pool directory."""
    if per_class == 100:
        pool = demo_pool(progress=False)
    else:
        pool = demo_pool(base / "demo_pool", base / "demo_images", n_per_class=per_class,
                         progress=False)
    items = pool.items
    rng = random.Random(seed)
    sub = items.iloc[sorted(rng.sample(range(len(items)), min(embed_images, len(items))))]
    pd.DataFrame({"path": sub["path"], "label": [pool.classnames[y] for y in sub["label"]],
                  "domain": sub["domain"], "split": sub["split"]}).to_csv(base / "embed.csv",
                                                                         index=False)
    # a run with a fitted posterior and one finished round, labels for it, then round 1
    run_args = ["--pool", str(pool.path), "--strategy", "epig", "--target", "clipart",
                "--budget", "20", "--draws", "16", "--n-targets", "64", "--no-progress"]
    steps = [
        ("run_fitted", ["select", "--run", str(base / "run_fitted"), *run_args]),
    ]
    for name, args in steps:
        code, _ = run_forked(args, log=base / "prepare.log")
        if code != 0:
            raise SystemExit(f"preparing {name} failed; see {base / 'prepare.log'}")
    truth = items.set_index("sample_id")["label"]
    queue = pd.read_parquet(base / "run_fitted" / "round_000" / "queue.parquet")
    pd.DataFrame({"sample_id": queue["sample_id"],
                  "label": [pool.classnames[truth[s]] for s in queue["sample_id"]]}).to_csv(
        base / "labels_round0.csv", index=False)
    shutil.copytree(base / "run_fitted", base / "run_labelled0")
    run_forked(["labels", "import", str(base / "labels_round0.csv"), "--run",
                str(base / "run_labelled0")], log=base / "prepare.log")
    shutil.copytree(base / "run_labelled0", base / "run_round1")
    run_forked(["select", "--run", str(base / "run_round1"), *run_args],
               log=base / "prepare.log")
    queue = pd.read_parquet(base / "run_round1" / "round_001" / "queue.parquet")
    pd.DataFrame({"sample_id": queue["sample_id"],
                  "label": [pool.classnames[truth[s]] for s in queue["sample_id"]]}).to_csv(
        base / "labels_round1.csv", index=False)
    shutil.copytree(base / "run_round1", base / "run_labelled")
    run_forked(["labels", "import", str(base / "labels_round1.csv"), "--run",
                str(base / "run_labelled")], log=base / "prepare.log")
    # loop: start from the run's base posterior so no trial refits it
    (base / "loop_start" / "seed0").mkdir(parents=True)
    for name in ("posterior", "posterior_base"):
        shutil.copytree(base / "run_fitted" / "posterior", base / "loop_start" / "seed0" / name)
    log(f"prepared starting states in {base} (pool {pool.path}, {len(items)} items)")
    return Path(pool.path)


def campaign(commands: list[str], trials: int, base: Path, pool_dir: Path, seed: int = 0,
             log: Callable = print) -> pd.DataFrame:
    """Run the trials; one row per command: trials, killed mid-run, exact recoveries, the
    reference time and the trials that differed (with the first differing files)."""
    table = build_commands(base, pool_dir, base)
    rng = random.Random(seed)
    rows = []
    for name in commands:
        cmd = table[name]
        warm = base / "warmup" / name  # first runs fill caches; time a warm run
        warm.mkdir(parents=True)
        cmd.prepare(warm)
        run_forked(cmd.args(warm), log=base / f"{name}.log")
        ref = base / "ref" / name
        ref.mkdir(parents=True)
        cmd.prepare(ref)
        code, t_ref = run_forked(cmd.args(ref), log=base / f"{name}.log")
        if code != 0:
            raise SystemExit(f"reference {name} failed ({code}); see {base / f'{name}.log'}")
        expected = fingerprint(cmd.output(ref))
        killed = exact = 0
        failures = []
        for trial in range(trials):
            work = Path(tempfile.mkdtemp(prefix=f"{name}-{trial}-", dir=base))
            cmd.prepare(work)
            code, _ = run_forked(cmd.args(work), kill_after=rng.uniform(0.02, 1.0) * t_ref,
                                 log=base / f"{name}.log")
            killed += code is None
            if code is None and not cmd.finished(work):
                code, _ = run_forked(cmd.args(work), log=base / f"{name}.log")
            got = fingerprint(cmd.output(work))
            if code in (0, None) and got == expected:
                exact += 1
                shutil.rmtree(work)
            else:
                diff = sorted(k for k in set(got) | set(expected)
                              if got.get(k) != expected.get(k))
                failures.append(f"trial {trial} (exit {code}): {diff[:3]}")
        rows.append({"command": name, "trials": trials, "killed mid-run": killed,
                     "exact recoveries": exact, "reference s": round(t_ref, 2),
                     "failures": "; ".join(failures)})
        log(f"{name}: {exact}/{trials} exact ({killed} killed mid-run), reference "
            f"{t_ref:.1f} s")
    return pd.DataFrame(rows)


def trial(group: str, case: str, outcome: str, detail: str = "") -> dict:
    return {"group": group, "case": case, "outcome": outcome, "detail": detail[:200]}


def bad_input_trials(work: Path) -> list[dict]:
    """Every case of the bad-input corpus, run in-process as ``activevlm ARGS``."""
    from typer.testing import CliRunner

    from tests import test_bad_inputs as corpus
    from tests.procs import tree_digest

    world = corpus.build_world(work / "world")
    rows = []
    for name, setup in corpus.CASES:
        tmp = work / "cases" / name
        tmp.mkdir(parents=True)
        args, culprits, before = corpus.prepare_case(world, tmp, setup)
        result = CliRunner().invoke(app, args)
        out = " ".join(result.output.split())
        missing = [c for c in culprits if c not in out]
        if tree_digest(tmp, world[1].path) != before:
            outcome = "data lost"
        elif not isinstance(result.exception, SystemExit) or "Traceback" in result.output:
            outcome, out = "traceback", repr(result.exception)
        elif result.exit_code == 0:
            outcome = "silent"
        elif missing or corpus.LIBRARY_TEXT.search(out):
            outcome = "unclear"
        else:
            outcome = "clear"
        group = next(g for prefix, g in GROUPS if name.startswith(prefix))
        rows.append(trial(group, name, outcome, "" if outcome == "clear" else
                          f"missing {missing}: {out}" if missing else out))
    return rows


def path_trials(work: Path) -> list[dict]:
    """User paths through a missing component (``x/..``), a symlink and a relative folder
    on select, labels import, finetune, loop and bench (the issue's data-loss case first)."""
    import contextlib

    import yaml
    from typer.testing import CliRunner

    from tests.procs import tree_digest
    from tests.test_paths import label_csv, labelled_run
    from tests.toy import toy_pool

    pool = toy_pool(work / "toy", domains=("photo", "sketch"), per=10)

    @contextlib.contextmanager
    def cwd(folder: Path):
        old = os.getcwd()
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(old)

    def invoke(args: list[str], folder: Path | None = None):
        with cwd(folder or ROOT):
            result = CliRunner().invoke(app, args)
        return result, " ".join(result.output.split())

    def judge(result, out, right: bool, lost: bool, stray: bool) -> tuple[str, str]:
        if lost:
            return "data lost", out
        if not isinstance(result.exception, SystemExit | None) or "Traceback" in out:
            return "traceback", repr(result.exception)
        if stray or not right:
            return ("silent" if result.exit_code == 0 else "unclear"), out
        return ("handled" if result.exit_code == 0 else "clear"), ""

    sel = ["--pool", str(pool.path), "--strategy", "random", "--budget", "3", "--no-progress"]
    rows = []

    def case(name: str) -> Path:
        folder = work / "paths" / name
        folder.mkdir(parents=True)
        return folder

    d = case("select-dotdot-pending")  # a run with pending items: refused, unchanged
    state = labelled_run(pool, d / "run")
    before = tree_digest(d)
    result, out = invoke(["select", "--run", f"{d}/x/../run", *sel])
    rows.append(trial("paths", d.name, *judge(
        result, out, "still await labels" in out, tree_digest(d) != before,
        (d / "x").exists())))

    d = case("select-dotdot-force")  # the same with --force: round 1 added, labels kept
    state = labelled_run(pool, d / "run")
    queue0 = (d / "run" / "round_000" / "queue.parquet").read_bytes()
    result, out = invoke(["select", "--run", f"{d}/x/../run", "--force", *sel])
    after = RunState.load(d / "run")
    rows.append(trial("paths", d.name, *judge(
        result, out, after.round == 2,
        after.labels != state.labels
        or (d / "run" / "round_000" / "queue.parquet").read_bytes() != queue0,
        (d / "x").exists())))

    d = case("select-symlink")
    labelled_run(pool, d / "real" / "run")
    (d / "link").symlink_to(d / "real")
    result, out = invoke(["select", "--run", f"{d}/link/run", "--force", *sel])
    after = RunState.load(d / "real" / "run")
    rows.append(trial("paths", d.name, *judge(result, out, after.round == 2,
                                              len(after.labels) != 20, False)))

    d = case("select-relative")
    labelled_run(pool, d / "run")
    result, out = invoke(["select", "--run", "run", "--force", *sel], folder=d)
    after = RunState.load(d / "run")
    rows.append(trial("paths", d.name, *judge(result, out, after.round == 2,
                                              len(after.labels) != 20, False)))

    d = case("labels-import-dotdot")
    state = labelled_run(pool, d / "run")
    label_csv(pool, d / "l.csv", [int(i) for i in pool.items.index[
        pool.items["sample_id"].isin(state.queued)]])
    result, out = invoke(["labels", "import", f"{d}/x/../l.csv", "--run", f"{d}/x/../run"])
    after = RunState.load(d / "run")
    rows.append(trial("paths", d.name, *judge(result, out, len(after.labels) == 24,
                                              len(after.labels) < 20, (d / "x").exists())))

    d = case("finetune-dotdot")
    labelled_run(pool, d / "run", n_labels=30, queue=False)
    result, out = invoke(["finetune", "--run", f"{d}/x/../run", "--epochs", "2", "--device",
                          "cpu", "--refit", "none", "--no-progress"])
    rows.append(trial("paths", d.name, *judge(
        result, out, (d / "run" / "head.safetensors").is_file(),
        len(RunState.load(d / "run").labels) != 30, (d / "x").exists())))

    d = case("loop-dotdot")
    result, out = invoke(["loop", "--pool", str(pool.path), "--run", f"{d}/x/../loop",
                          "--strategy", "random", "--rounds", "1", "--budget", "3", "--epochs",
                          "2", "--target", "sketch", "--no-progress"])
    rows.append(trial("paths", d.name, *judge(
        result, out, (d / "loop" / "seed0" / "metrics.jsonl").is_file(), False,
        (d / "x").exists())))

    d = case("bench-dotdot-relative")
    (d / "b.yaml").write_text(yaml.safe_dump({
        "name": "t", "seeds": [0], "strategies": ["random-untargeted"],
        "loop": {"rounds": 1, "select": {"budget": 3}, "finetune": {"max_epochs": 2}},
        "datasets": [{"name": "toy", "pool": os.path.relpath(pool.path, d)}]}))
    result, out = invoke(["bench", "x/../b.yaml", "--out", "x/../out", "--no-plot",
                          "--no-progress"], folder=d)
    rows.append(trial("paths", d.name, *judge(
        result, out, (d / "out" / "results.parquet").is_file(), False, (d / "x").exists())))
    return rows


def concurrency_trials(work: Path) -> list[dict]:
    """The issue's concurrent pairs as real processes that have all started before the
    first one holds the run's lock (``tests/procs.gate``)."""
    from tests.procs import gate, open_gate, read_until, run_cli, start_cli
    from tests.test_run_lock import at_once, label_csv, new_run
    from tests.toy import toy_pool

    wait = {"ACTIVEVLM_LOCK_WAIT": "300"}
    pool = toy_pool(work / "toy", domains=("photo", "sketch", "art"), per=10)
    sel = ["select", "--pool", str(pool.path), "--strategy", "entropy", "--budget", "8",
           "--no-progress"]
    rows = []

    run = work / "c1" / "run"  # two selects without --force: one round, one refusal
    new_run(pool, run)
    results = sorted(at_once(run, [[*sel, "--run", str(run)]] * 2))
    state = RunState.load(run)
    right = ([c for c, _ in results] == [0, 1] and "still await labels" in results[1][1]
             and state.round == 1 and not (run / "round_001").exists())
    rows.append(trial("concurrency", "C1: select + select, no --force",
                      "handled" if right else "silent", "" if right else str(results)))

    run, ref = work / "c2" / "run", work / "c2" / "ref"  # select waits while finetune writes
    state = new_run(pool, run)
    items = pool.items.iloc[:40]
    state.labels = {s: int(y) for s, y in zip(items["sample_id"], items["label"], strict=True)}
    state.save()
    from activevlm.runs.rundir import RunDir, base_posterior

    base_posterior(RunDir(run), pool, progress=False, log=lambda *a: None)
    shutil.copytree(run, ref)
    finetune = ["finetune", "--epochs", "3", "--device", "cpu", "--no-progress"]
    bald = ["select", "--pool", str(pool.path), "--strategy", "bald", "--budget", "6",
            "--draws", "8", "--no-progress"]
    holder = gate(run, then=[*finetune, "--run", str(run)])
    waiting = start_cli([*bald, "--run", str(run)], **wait)
    out = read_until(waiting, "waiting up to")
    open_gate(holder)
    code = waiting.wait(timeout=600)
    out += waiting.stdout.read()
    for args in (finetune, bald):
        run_cli([*args, "--run", str(ref)])
    same = all((run / f).read_bytes() == (ref / f).read_bytes() for f in (
        "head.safetensors", "posterior/posterior.safetensors", "round_000/queue.parquet"))
    right = code == 0 and "fine-tuned head" in out and same
    rows.append(trial("concurrency", "C2: select waiting while finetune writes",
                      "handled" if right else "silent", "" if right else out[-200:]))

    run = work / "imports" / "run"  # two label imports: all labels kept
    new_run(pool, run)
    label_csv(pool, work / "imports" / "a.csv", range(0, 50))
    label_csv(pool, work / "imports" / "b.csv", range(50, 100))
    results = at_once(run, [["labels", "import", str(work / "imports" / f), "--run",
                             str(run)] for f in ("a.csv", "b.csv")])
    n = len(RunState.load(run).labels)
    rows.append(trial("concurrency", "labels import + labels import",
                      "handled" if n == 100 and all(c == 0 for c, _ in results)
                      else "data lost", f"{n} labels of 100: {results}" if n != 100 else ""))

    run = work / "mixed" / "run"  # a select and a label import: the round and the labels
    new_run(pool, run)
    label_csv(pool, work / "mixed" / "a.csv", range(0, 90))
    results = at_once(run, [[*sel, "--run", str(run)],
                            ["labels", "import", str(work / "mixed" / "a.csv"), "--run",
                             str(run)]])
    state = RunState.load(run)
    right = len(state.labels) == 90 and state.round == 1
    rows.append(trial("concurrency", "select + labels import",
                      "handled" if right else "data lost", "" if right else str(results)))
    return rows


def kill_trials(table: pd.DataFrame) -> list[dict]:
    """The kill part's rows as trials: an exact recovery is handled, any other data lost."""
    rows = []
    for _, r in table.iterrows():
        rows += [trial("kill -9", r["command"], "handled")] * int(r["exact recoveries"])
        rows += [trial("kill -9", r["command"], "data lost", r["failures"])] * int(
            r["trials"] - r["exact recoveries"])
    return rows


def outcome_table(trials: list[dict]) -> pd.DataFrame:
    """Per group (and in total): trials tried and how many ended in each outcome."""
    df = pd.DataFrame(trials)
    counts = pd.crosstab(df["group"], df["outcome"]).reindex(columns=list(OUTCOMES),
                                                             fill_value=0)
    order = list(dict.fromkeys(df["group"]))
    counts = counts.loc[order]
    counts.insert(0, "tried", counts.sum(axis=1))
    counts.loc["total"] = counts.sum()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-images", type=int, default=128)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts of the campaign: {', '.join(PARTS)}")
    parser.add_argument("--work", type=Path, default=None,
                        help="working folder (default: a new temporary folder, deleted)")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    parts = [c.strip() for c in args.parts.split(",") if c.strip()]
    for kind, given, known in (("command", commands, COMMANDS), ("part", parts, PARTS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {kind}(s) {unknown}; choose from {list(known)}")
    base = (args.work or Path(tempfile.mkdtemp(prefix="crash-campaign-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trials: list[dict] = []
    if "kill" in parts:
        pool_dir = prepare_base(base / "kill", args.per_class, args.seed,
                                embed_images=args.embed_images)
        df = campaign(commands, args.trials, base / "kill", pool_dir, args.seed)
        print(df.drop(columns="failures").to_string(index=False))
        trials += kill_trials(df)
    for part, run_part in (("concurrency", concurrency_trials), ("paths", path_trials),
                           ("bad-inputs", bad_input_trials)):
        if part in parts:
            (base / part).mkdir(parents=True, exist_ok=True)
            trials += run_part(base / part)
            print(f"{part}: done after {time.perf_counter() - start:.0f} s", flush=True)
    table = outcome_table(trials)
    print(table.to_string())
    for t in trials:
        if t["outcome"] not in ("clear", "handled"):
            print(f"{t['outcome']}: {t['group']} / {t['case']}: {t['detail']}")
    print(f"total {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPU cores")
    if args.work is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if table.loc["total", ["clear", "handled"]].sum() == table.loc["total", "tried"] \
        else 1


if __name__ == "__main__":
    sys.exit(main())
