"""kill -9 campaign: every command, killed at a random moment and rerun, must end exactly
where an uninterrupted run ends.

    OMP_NUM_THREADS=1 python benchmarks/crash_campaign.py [--trials 20] [--per-class 100]
        [--commands embed,select,labels-import,finetune,loop] [--seed 0] [--work DIR]
        [--embed-images 128]

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

from activevlm.cli.main import app  # noqa: E402
from activevlm.demo.pool import demo_pool  # noqa: E402
from activevlm.runs import RunState  # noqa: E402

COMMANDS = ("embed", "select", "labels-import", "finetune", "loop")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-images", type=int, default=128)
    parser.add_argument("--work", type=Path, default=None,
                        help="working folder (default: a new temporary folder, deleted)")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command(s) {unknown}; choose from {list(COMMANDS)}")
    base = args.work or Path(tempfile.mkdtemp(prefix="crash-campaign-"))
    base.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pool_dir = prepare_base(base, args.per_class, args.seed, embed_images=args.embed_images)
    df = campaign(commands, args.trials, base, pool_dir, args.seed)
    print(df.drop(columns="failures").to_string(index=False))
    for _, row in df[df["failures"] != ""].iterrows():
        print(f"{row['command']}: {row['failures']}")
    print(f"total {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPU cores")
    if args.work is None:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if (df["exact recoveries"] == df["trials"]).all() else 1


if __name__ == "__main__":
    sys.exit(main())
