"""benchmarks/gpu_check.py in its CPU mode: every check runs, passes, and a wrong result fails."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "fixtures" / "model_configs" / "tiny-clip.json"


def load_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_runs_green_on_cpu(capsys, monkeypatch):
    script = load_script(monkeypatch)
    status = script.main(["--quick", "--cpu", "--threads", "2", "--model-config", str(CONFIG)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "SKIPPED: CUDA paths (--cpu given)" in out
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert {k: rows[k] for k in ("embed", "kfac", "bald", "epig", "faiss", "finetune")} == dict(
        embed="ok", kfac="ok", bald="ok", epig="ok", faiss="ok", finetune="ok")
    assert "all checks within tolerance" in out


def test_gpu_check_fails_on_a_wrong_result(capsys, monkeypatch):
    script = load_script(monkeypatch)
    real_search = script.EmbeddingIndex.search

    def off_by_one(self, queries, k, **kw):  # a search that returns the wrong neighbours
        sims, ids = real_search(self, queries, k, **kw)
        return sims, np.where(ids >= 0, (ids + 1) % self.n, ids)

    monkeypatch.setattr(script.EmbeddingIndex, "search", off_by_one)
    assert script.main(["--quick", "--cpu", "--only", "faiss"]) == 1
    out = capsys.readouterr().out
    assert "| faiss | cpu flat | FAIL |" in out and "FAILED: faiss" in out
