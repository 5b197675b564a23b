"""``Σ_w x log x`` over each row of a block, added to a float64 accumulator: EPIG's one
elementwise pass after each joint GEMM.

On the CPU the fused C loop of ``plogp.c`` (one read of the block, the log vectorised through
libmvec) replaces torch's three passes (log into a second buffer, multiply, sum): measured
40 vs 60 µs for a [65, 2080] float32 block on one core. Without a C compiler, or with
``ACTIVEVLM_NATIVE=0``, the torch passes run instead; both sum a row in the block's dtype.
"""

from __future__ import annotations

import ctypes

import torch

from activevlm.utils.native import load_native

_F32, _F64 = "add_plogp_rows_f32", "add_plogp_rows_f64"
_ARGS = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
_SIGNATURES = {_F32: (None, _ARGS), _F64: (None, _ARGS)}


def _check(lib: ctypes.CDLL) -> bool:
    """The kernel against float64 torch on rows that mix ordinary and tiny (1e-18) entries."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 203, generator=gen, dtype=torch.float64)
    x[1] *= 1e-17
    x[:, 7] = 2e-18
    want = (x * x.log()).sum(1) + 1.0
    for name, dtype, tol in ((_F32, torch.float32, 1e-5), (_F64, torch.float64, 1e-12)):
        xs = x.to(dtype)
        got = torch.ones(5, dtype=torch.float64)
        getattr(lib, name)(xs.data_ptr(), 5, 203, got.data_ptr())
        if not torch.allclose(got, want, rtol=tol, atol=0.0):
            return False
    return True


def native_plogp() -> ctypes.CDLL | None:
    """The compiled kernel library, or None when it is unavailable (see module docstring)."""
    return load_native(__package__, "plogp.c", _SIGNATURES, _check)


class PlogpRows:
    """``out[r] += Σ_w x[r, w] log x[r, w]`` for blocks ``x [R, W]`` (entries > 0, contiguous,
    at most ``max_entries``) of one dtype and device; ``out [R]`` float64, contiguous."""

    def __init__(self, dtype: torch.dtype, device: torch.device, max_entries: int,
                 max_rows: int):
        lib = native_plogp() if device.type == "cpu" else None
        names = {torch.float32: _F32, torch.float64: _F64}
        self._native = getattr(lib, names[dtype]) if lib and dtype in names else None
        if self._native is None:
            self._log = torch.empty(max_entries, dtype=dtype, device=device)
            self._rows = torch.empty(max_rows, dtype=dtype, device=device)

    @property
    def native(self) -> bool:
        """Whether the fused C loop runs (else torch's log, multiply and sum)."""
        return self._native is not None

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> None:
        rows, cols = x.shape
        if self._native is not None:
            self._native(x.data_ptr(), rows, cols, out.data_ptr())
            return
        logx = torch.log(x, out=self._log[: x.numel()].view_as(x))
        out += torch.sum(logx.mul_(x), 1, out=self._rows[:rows])
