"""EPIG (Bickford Smith et al., AISTATS 2023) from joint posterior draws, by chunked matmuls.

    EPIG(x) = (1/M) Σ_m KL( p̂(y, y* | x, x*_m) ‖ p̄(y|x) p̄(y*|x*_m) )
            = H[p̄(y|x)] + (1/M) Σ_m H[p̄(y*|x*_m)] - (1/M) Σ_m H[p̂(y, y* | x, x*_m)]

with ``p̂(y, y*) = (1/K) Σ_k p_k(y|x) p_k(y*|x*)``. For a block of n pool and m target
inputs, all ``n·m`` joints ``[C, C]`` come from one matrix product ``[n·C, K] @ [K, m·C]``;
the only other work is ``Σ p̂ log p̂`` per row of the block (``m·C`` terms in the input dtype;
rows and blocks are added in float64, as accurate as the float32 GEMM allows), one fused C
pass on the CPU (``acquisition/plogp.py``). Blocks hold about ``max_elements`` entries
(default 5.6·10^5, 8 pool inputs x 16 targets at C = 65), so that pass reads from cache what
the GEMM just wrote; with T CPU threads, T Python threads take shares of the blocks.

Sharp predictives (CLIP's logit scale 100) have class probabilities of 1e-20 and below, whose
products are subnormal floats; x86 computes those in microcode, 50-100x slower (measured: a
block GEMM at 0.9 instead of 90 GFLOP/s). Probabilities are therefore floored at
``ε = √(K·tiny)`` (1.1·10⁻¹⁸ in float32 and 1.5·10⁻¹⁵³ in float64 at K = 100) before the
GEMM: every product ``ε·ε/K`` and every joint is then a normal float, never 0, so the log
needs no clamp (``0 log 0`` would be NaN). The floor moves ``Σ p̂ log p̂`` by at most about
``M·C²·ε·|log ε|`` (< 10⁻⁸ in float32 for M = 10⁴, C = 65, K = 100). Cost O(N·M·C²·K);
memory is one buffer of ``max_elements`` entries per thread (two without the C pass).

``top_classes=c`` keeps, per input, the ``c`` classes of highest mean probability and lumps the
rest into one "other" outcome. Each input's coarsening is a fixed function of its label, so
by the data-processing inequality the result is a lower bound on the exact EPIG, equal to it
when the dropped mass is zero; the cost falls by ``(C / (c + 1))²``.

The K draws must be *joint*: draw k drives pool and target inputs alike. With independent
draws per input the joint collapses to the product of marginals and the estimate decays to 0
as K grows (see tests/test_epig_bald.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from activevlm.acquisition.entropy import entropy
from activevlm.acquisition.plogp import PlogpRows

DEFAULT_MAX_ELEMENTS = 560_000  # entries of one joint block (2.1 MiB in float32)
TARGET_CHUNK = 16  # targets per block before pool inputs are added


def epig_chunk_sizes(n: int, m: int, c: int, max_elements: int) -> tuple[int, int]:
    """Block sizes ``(n_chunk, m_chunk)`` with ``n_chunk·m_chunk·C² <= max_elements``.

    A block takes ``TARGET_CHUNK`` (16) targets, then as many pool inputs as fit; when the
    pool inputs run out first, the targets widen, in whole multiples of 16 (rows of whole
    16-float vectors). Measured on 2 cores at C = 65, K = 100 (``benchmarks/acquisition.py
    --only kernel``): (8 pool, 16 targets) blocks ran at 0.71 of the GEMM floor on one thread
    and 0.68-0.70 on two; (1, 32) blocks at about 0.72 and 0.58; (4, 16) at about 0.72 and
    0.3-0.4 on two threads (not understood; measured, so avoided).
    """
    per_pair = c * c
    m_chunk = max(1, min(m, TARGET_CHUNK, max_elements // per_pair))
    n_chunk = max(1, min(n, max_elements // (per_pair * m_chunk)))
    m_chunk = max(m_chunk, min(m, max_elements // (per_pair * n_chunk)))
    if TARGET_CHUNK <= m_chunk < m:
        m_chunk -= m_chunk % TARGET_CHUNK
    return n_chunk, m_chunk


def coarsen_classes(probs: torch.Tensor, top: int) -> torch.Tensor:
    """Per input, the ``top`` classes of highest mean probability plus "other":
    ``[K, N, C] -> [K, N, top + 1]`` (unchanged when ``top >= C``)."""
    if top < 1:
        raise ValueError(f"top_classes must be >= 1, got {top}")
    if top >= probs.shape[-1]:
        return probs
    keep = probs.mean(0).topk(top, dim=-1).indices  # [N, top]
    kept = probs.gather(-1, keep.expand(probs.shape[0], -1, -1))
    return torch.cat([kept, (1.0 - kept.sum(-1, keepdim=True)).clamp_min(0.0)], dim=-1)


def epig_scores(
    pool_probs: torch.Tensor,
    target_probs: torch.Tensor,
    *,
    top_classes: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """EPIG of each pool input about the target set: ``[K, N, C], [K, M, C] -> [N]``.

    Matmuls run in the dtype and on the device of ``pool_probs`` (entropy sums in float64);
    scores come back in that dtype, clamped at 0 (a KL divergence; negatives are round-off).
    ``top_classes``: the coarsened lower bound described in the module docstring.
    """
    if pool_probs.ndim != 3 or target_probs.ndim != 3:
        raise ValueError(
            f"EPIG needs pool probs [K, N, C] and target probs [K, M, C], got "
            f"{list(pool_probs.shape)} and {list(target_probs.shape)}"
        )
    k, n, c = pool_probs.shape
    if target_probs.shape[0] != k or target_probs.shape[2] != c:
        raise ValueError(
            f"EPIG: target probs {list(target_probs.shape)} do not match pool probs "
            f"{list(pool_probs.shape)} (same K joint draws and C classes required)"
        )
    m = target_probs.shape[1]
    if m == 0:
        raise ValueError("EPIG: the target set is empty")
    target_probs = target_probs.to(pool_probs)
    if top_classes is not None:
        pool_probs = coarsen_classes(pool_probs, top_classes)
        target_probs = coarsen_classes(target_probs, top_classes)
        c = pool_probs.shape[-1]
    # Entropies of ~log C are summed over M·C² terms and differenced down to EPIG ~1e-3:
    # accumulate in float64 even when the matmuls run in float32.
    acc = torch.float64
    h_pool = entropy(pool_probs.mean(0).to(acc))  # [N]
    h_target_mean = entropy(target_probs.mean(0).to(acc)).mean()  # scalar
    n_chunk, m_chunk = epig_chunk_sizes(n, m, c, max_elements)
    # Target blocks [K, m·C], pre-scaled by 1/K so the product is already the mean over draws.
    floor = subnormal_safe_floor(pool_probs.dtype, k)
    target_blocks = [
        (target_probs[:, m0 : m0 + m_chunk].clamp_min(floor) / k).reshape(k, -1)
        for m0 in range(0, m, m_chunk)
    ]
    plogp = _plogp_sums(pool_probs, target_blocks, n_chunk, floor)  # [N]
    h_joint_mean = -plogp / m
    return (h_pool + h_target_mean - h_joint_mean).clamp_min(0.0).to(pool_probs.dtype)


def _plogp_sums(pool_probs: torch.Tensor, target_blocks: list[torch.Tensor],
                n_chunk: int, floor: float) -> torch.Tensor:
    """``Σ_{y, y*, x*} p̂ log p̂`` per pool input, over all target blocks (already floored and
    divided by K): ``[N]`` float64; pool probabilities are floored at ``floor`` here.

    On the CPU with T torch threads, T Python threads each take a contiguous share of the pool
    blocks and run them with single-threaded torch (the GEMM and the C loop release the GIL):
    measured faster than T-threaded GEMMs on blocks this small, whose elementwise pass would
    otherwise run on one core.
    """
    k, n, c = pool_probs.shape
    acc = torch.zeros(n * c, dtype=torch.float64, device=pool_probs.device)  # per (x, y)
    starts = list(range(0, n, n_chunk))
    workers = min(torch.get_num_threads(), len(starts)) if pool_probs.device.type == "cpu" else 1

    def run(share: list[int]) -> None:
        _plogp_blocks(pool_probs, target_blocks, share, n_chunk, floor, acc)

    if workers == 1:
        run(starts)
    else:
        shares = [starts[i * len(starts) // workers : (i + 1) * len(starts) // workers]
                  for i in range(workers)]
        with torch_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, shares))
    return acc.view(n, c).sum(1)


def _plogp_blocks(pool_probs: torch.Tensor, target_blocks: list[torch.Tensor],
                  starts: list[int], n_chunk: int, floor: float, acc: torch.Tensor) -> None:
    """Adds ``Σ p̂ log p̂`` per (pool input, class) into ``acc [N·C]`` for the pool blocks
    beginning at ``starts``, with its own scratch buffers."""
    k, _, c = pool_probs.shape
    max_rows = n_chunk * c
    joint_buf = pool_probs.new_empty(max_rows * target_blocks[0].shape[1])
    add_plogp = PlogpRows(pool_probs.dtype, pool_probs.device, joint_buf.numel(), max_rows)
    for n0 in starts:
        left = pool_probs[:, n0 : n0 + n_chunk].clamp_min(floor).reshape(k, -1).T  # [n·C, K]
        rows = left.shape[0]
        out = acc[n0 * c : n0 * c + rows]
        for right in target_blocks:
            joint = joint_buf[: rows * right.shape[1]].view(rows, -1)
            torch.matmul(left, right, out=joint)  # p̂(y, y*) >= ε² for every pair
            add_plogp(joint, out)  # rows of m·C terms in the input dtype, added in float64


_THREADS_LOCK = threading.Lock()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block. The setting is partly
    process-wide (the default for new threads, MKL's count), so one block at a time holds it:
    concurrent callers wait instead of restoring each other's values."""
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def subnormal_safe_floor(dtype: torch.dtype, k: int) -> float:
    """``ε = 1.01·√(K·tiny)``: the GEMM's products ``ε·(ε/K)`` are normal floats."""
    return math.sqrt(k * torch.finfo(dtype).tiny) * 1.01
