"""Run a command in a fresh memory cgroup with a hard limit: does it need the memory its RSS shows?

Peak RSS counts the file-backed pages a process has mapped (FAISS's on-disk lists, memory-mapped
shards). The kernel can drop or write back those pages when memory runs short; anonymous
memory it cannot. This runs ``COMMAND`` (and its children) in a new memory cgroup limited to
``--limit`` (cgroup v1 ``memory.limit_in_bytes``, or v2 ``memory.max``) and prints one table
row: the limit, the cgroup's peak charge (anonymous memory + page cache it touched), the
command's peak RSS (``wait4``), the times the limit was hit, OOM kills, exit status and wall.
A command that exits 0 with a peak RSS above the limit ran within the limit: the excess was
reclaimable page cache. Needs permission to create a cgroup (root in a container, or a
delegated v2 subtree); otherwise it says so and exits 2.

    python benchmarks/memory_limit.py --limit 2G -- \\
        python benchmarks/targeting_scale.py --n 1000000 --methods ivf-build
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(text: str) -> int:
    """``"1.5G"``, ``"800M"`` or a byte count."""
    unit = UNITS.get(text[-1:].upper())
    return int(float(text[:-1]) * unit) if unit else int(text)


def own_cgroup() -> tuple[str, Path]:
    """``("v1" | "v2", folder)`` of this process's memory cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return "v1", ROOT / "memory" / path.lstrip("/")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return "v2", ROOT / line[3:].lstrip("/")
    raise OSError("no memory cgroup in /proc/self/cgroup")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", required=True, help="hard memory limit, e.g. 2G or 800M")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    limit = parse_size(args.limit)
    try:
        kind, parent = own_cgroup()
        group = parent / f"activevlm-limit-{os.getpid()}"
        group.mkdir()
    except OSError as err:
        print(f"cannot create a memory cgroup here ({err}); this check needs root in a "
              "container or a delegated cgroup v2 subtree", file=sys.stderr)
        sys.exit(2)
    files = ({"limit": "memory.limit_in_bytes", "peak": "memory.max_usage_in_bytes",
              "hits": "memory.failcnt"} if kind == "v1" else
             {"limit": "memory.max", "peak": "memory.peak", "hits": "memory.events"})
    try:
        (group / files["limit"]).write_text(str(limit))
        procs = group / "cgroup.procs"
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, preexec_fn=lambda: procs.write_text(str(os.getpid())))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        peak = int((group / files["peak"]).read_text().split()[0])
        if kind == "v1":
            hits = int((group / files["hits"]).read_text())
            oom = next((int(ln.split()[1]) for ln in (group / "memory.oom_control")
                        .read_text().splitlines() if ln.startswith("oom_kill ")), 0)
        else:
            events = dict(ln.split() for ln in (group / "memory.events").read_text()
                          .splitlines())
            hits, oom = int(events.get("max", 0)), int(events.get("oom_kill", 0))
    finally:
        with contextlib.suppress(OSError):  # left behind only if the command left processes
            group.rmdir()
    code = os.waitstatus_to_exitcode(status)
    print(f"\n| limit GB | cgroup peak GB (anon + page cache) | peak RSS GB | limit hit | "
          f"OOM kills | exit | wall s |\n|---|---|---|---|---|---|---|\n"
          f"| {limit / 2**30:.2f} | {peak / 2**30:.2f} | {usage.ru_maxrss / 2**20:.2f} | "
          f"{hits} | {oom} | {code} | {wall:.0f} |")
    sys.exit(code)


if __name__ == "__main__":
    main()
