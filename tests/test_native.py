"""The compiled Σ x log x pass (acquisition/plogp.c): loading, caching, fallback and agreement
with float64 brute force, through PlogpRows and through epig_scores."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from activevlm.acquisition import epig_scores
from activevlm.acquisition.plogp import PlogpRows, native_plogp
from activevlm.utils import native
from activevlm.utils.native import compiler, load_native


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty user cache and no library loaded in this process (restored afterwards)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native._load.cache_clear()
    yield tmp_path / "activevlm" / "native"
    native._load.cache_clear()


def blocks(dtype: torch.dtype) -> torch.Tensor:
    """Rows of ordinary, tiny (~1e-18, EPIG's floor) and mixed joint probabilities: [4, 1040]."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1040, generator=g, dtype=torch.float64) / 1040
    x[1] = x[1] * 1e-15 + 1.2e-18
    x[2, ::3] = 1.2e-18
    return x.to(dtype)


needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler on this machine")


@needs_cc
def test_native_kernel_compiles_loads_and_is_used(fresh):
    assert native_plogp() is not None
    assert len(list(fresh.glob("plogp-*.so"))) == 1
    assert PlogpRows(torch.float32, torch.device("cpu"), 10, 2).native


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("use_native", [True, False])
def test_plogp_rows_equal_float64_brute_force(fresh, monkeypatch, dtype, rtol, use_native):
    if use_native and compiler() is None:
        pytest.skip("no C compiler on this machine")
    if not use_native:
        monkeypatch.setenv("ACTIVEVLM_NATIVE", "0")
    x = blocks(dtype)
    rows = PlogpRows(dtype, torch.device("cpu"), x.numel(), x.shape[0])
    assert rows.native == use_native
    out = torch.full((4,), 0.5, dtype=torch.float64)
    rows(x, out)
    rows(x[:3], out[:3])  # a shorter block adds to its rows only
    xd = x.double()
    want = 0.5 + (xd * xd.log()).sum(1) * torch.tensor([2.0, 2, 2, 1], dtype=torch.float64)
    torch.testing.assert_close(out, want, rtol=rtol, atol=0.0)


@needs_cc
def test_epig_is_the_same_with_and_without_the_c_pass(fresh, monkeypatch):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(50, 20, 65, generator=g), -1)
    t = torch.softmax(3 * torch.randn(50, 40, 65, generator=g), -1)
    with_c = epig_scores(p, t)
    monkeypatch.setenv("ACTIVEVLM_NATIVE", "0")
    native._load.cache_clear()
    assert native_plogp() is None
    torch.testing.assert_close(epig_scores(p, t), with_c, rtol=1e-4, atol=1e-6)


def load_in_new_process(cache: Path) -> None:
    """Load the kernel in a fresh interpreter (dlopen in this one would return its mapped copy)."""
    code = "from activevlm.acquisition.plogp import native_plogp; assert native_plogp()"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parents[1])}
    subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, check=True, timeout=300)


@needs_cc
def test_cached_library_is_reused_and_a_damaged_one_rebuilt(fresh):
    load_in_new_process(fresh)
    (lib,) = fresh.glob("plogp-*.so")
    first = lib.stat().st_mtime_ns
    load_in_new_process(fresh)
    assert lib.stat().st_mtime_ns == first  # not rebuilt
    lib.write_bytes(b"not a shared library")
    load_in_new_process(fresh)
    assert lib.read_bytes()[:4] == b"\x7fELF"


def test_a_broken_compiler_falls_back_to_torch_with_a_warning(fresh, monkeypatch, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: fatal error: no input' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.warns(UserWarning, match=r"plogp\.c is not used .*exited with 1.*no input"):
        assert native_plogp() is None
    x = blocks(torch.float32)
    out = torch.zeros(4, dtype=torch.float64)
    PlogpRows(torch.float32, torch.device("cpu"), x.numel(), 4)(x, out)
    torch.testing.assert_close(out, (x.double() * x.double().log()).sum(1), rtol=2e-6, atol=0)


@needs_cc
def test_a_library_that_fails_its_check_is_not_used(fresh):
    sig = {"add_plogp_rows_f32": (None, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_void_p])}
    with pytest.warns(UserWarning, match="differs from the reference"):
        assert load_native("activevlm.acquisition", "plogp.c", sig, lambda lib: False) is None


@needs_cc
def test_loading_the_kernel_keeps_subnormal_floats(fresh):
    """No -ffast-math start-up code: the process still computes subnormals (no flush to 0)."""
    assert native_plogp() is not None
    tiny = torch.finfo(torch.float32).tiny
    assert float(torch.tensor(tiny, dtype=torch.float32) * 0.25) > 0.0


def test_epig_threads_and_concurrent_calls_give_the_same_scores():
    """1 and 2 torch threads, and 8 calls from two Python threads at once, score bitwise alike
    and leave torch's thread count as it was."""
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(30, 37, 65, generator=g), -1)
    t = torch.softmax(3 * torch.randn(30, 50, 65, generator=g), -1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = epig_scores(p, t)
        torch.set_num_threads(2)
        two = epig_scores(p, t)
        assert torch.get_num_threads() == 2
        with ThreadPoolExecutor(2) as pool:
            concurrent = list(pool.map(lambda _: epig_scores(p, t), range(8)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert all(torch.equal(x, two) for x in concurrent)
