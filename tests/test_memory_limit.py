"""benchmarks/memory_limit.py: a command that needs more anonymous memory than the limit is
killed; one that only maps more file pages than the limit runs to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_limit.py"


def limited(limit: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--limit", limit, "--", sys.executable,
                           "-c", code], capture_output=True, text=True, timeout=300)


def fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (from /proc/mounts)."""
    mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2]


def test_anonymous_memory_over_the_limit_is_killed_and_page_cache_is_not(tmp_path):
    if fs_type(tmp_path) == "tmpfs":
        pytest.skip("tmp_path is on tmpfs, whose pages are not reclaimable page cache")
    probe = limited("400M", "pass")
    if probe.returncode == 2 and "cannot create a memory cgroup" in probe.stderr:
        pytest.skip(probe.stderr.strip())
    assert probe.returncode == 0, probe.stderr
    # 600 MB of anonymous memory under a 400 MB limit: OOM-killed, reported in the table
    anon = limited("400M", "import numpy as np; a = np.ones(600 * 2**20 // 8); print(a.sum())")
    assert anon.returncode != 0
    row = anon.stdout.strip().splitlines()[-1].split("|")
    assert int(row[5]) >= 1  # OOM kills
    # 800 MB of a file written and read back through a map inside the cgroup: reclaimed, exit 0
    data = str(tmp_path / "big.f64")
    code = ("import numpy as np\n"
            f"with open({data!r}, 'wb') as f:\n"
            "    for _ in range(100): f.write(np.ones(2**20).tobytes())\n"  # 8 MB at a time
            f"a = np.memmap({data!r}, dtype=np.float64, mode='r')\n"
            "n = 2**20\n"
            "assert sum(float(a[i:i + n].sum()) for i in range(0, a.size, n)) == 100 * n")
    paged = limited("400M", code)
    assert paged.returncode == 0, paged.stdout + paged.stderr
    row = paged.stdout.strip().splitlines()[-1].split("|")
    assert float(row[2]) <= 400 / 1024 + 0.01  # the cgroup's peak charge stayed under the limit
    assert float(row[3]) > 400 / 1024  # while the process's RSS went above it
