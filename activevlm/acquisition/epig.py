"""EPIG (Bickford Smith et al., AISTATS 2023) from joint posterior draws, by chunked matmuls.

    EPIG(x) = (1/M) Σ_m KL( p̂(y, y* | x, x*_m) ‖ p̄(y|x) p̄(y*|x*_m) )
            = H[p̄(y|x)] + (1/M) Σ_m H[p̄(y*|x*_m)] - (1/M) Σ_m H[p̂(y, y* | x, x*_m)]

with ``p̂(y, y*) = (1/K) Σ_k p_k(y|x) p_k(y*|x*)``. For a block of n pool and m target
inputs, all ``n·m`` joints ``[C, C]`` come from one matrix product ``[n·C, K] @ [K, m·C]``;
the only other work is ``Σ p̂ log p̂`` per pool input: one log into a second buffer, an
in-place product and one sum per row (``m·C`` terms in the input dtype; rows and blocks are
added in float64, as accurate as the float32 GEMM allows). Blocks hold about
``max_elements`` entries (default 1.6·10^5: the block, its log and the target block stay in a
2 MiB L2 cache), so the elementwise passes read from cache what the GEMM just wrote.

Sharp predictives (CLIP's logit scale 100) have class probabilities of 1e-20 and below, whose
products are subnormal floats; x86 computes those in microcode, 50-100x slower (measured: a
block GEMM at 0.9 instead of 90 GFLOP/s). Probabilities are therefore floored at
``ε = √(K·tiny)`` (1.1·10⁻¹⁸ in float32 and 1.5·10⁻¹⁵³ in float64 at K = 100) before the
GEMM: every product ``ε·ε/K`` and every joint is then a normal float, never 0, so the log
needs no clamp (``0 log 0`` would be NaN). The floor moves ``Σ p̂ log p̂`` by at most about
``M·C²·ε·|log ε|`` (< 10⁻⁸ in float32 for M = 10⁴, C = 65, K = 100). Cost O(N·M·C²·K);
memory is two buffers of ``max_elements`` entries.

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

import torch

from activevlm.acquisition.entropy import entropy

DEFAULT_MAX_ELEMENTS = 160_000  # entries of one joint block (625 KiB in float32)


def epig_chunk_sizes(n: int, m: int, c: int, max_elements: int) -> tuple[int, int]:
    """Block sizes ``(n_chunk, m_chunk)`` with ``n_chunk·m_chunk·C² <= max_elements``.

    Targets fill a block first (one pool input against up to ``max_elements / C²`` targets:
    a ``[C, K] @ [K, m·C]`` product whose output stays in cache), rounded down to a multiple
    of 16 targets so that rows are whole 16-float vectors (measured 1.1x for C = 65); several
    pool inputs share a block only when all targets fit.
    """
    per_pair = c * c
    m_chunk = max(1, min(m, max_elements // per_pair))
    if 16 <= m_chunk < m:
        m_chunk -= m_chunk % 16
    n_chunk = max(1, min(n, max_elements // (per_pair * m_chunk)))
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
    divided by K): ``[N]`` float64; pool probabilities are floored at ``floor`` here."""
    k, n, c = pool_probs.shape
    acc = torch.zeros(n * c, dtype=torch.float64, device=pool_probs.device)  # per (x, y)
    size = n_chunk * c * target_blocks[0].shape[1]
    joint_buf, log_buf = pool_probs.new_empty(size), pool_probs.new_empty(size)
    row_sums = pool_probs.new_empty(n_chunk * c)
    for n0 in range(0, n, n_chunk):
        left = pool_probs[:, n0 : n0 + n_chunk].clamp_min(floor).reshape(k, -1).T  # [n·C, K]
        rows = left.shape[0]
        for right in target_blocks:
            joint = joint_buf[: rows * right.shape[1]].view(rows, -1)
            torch.matmul(left, right, out=joint)  # p̂(y, y*) >= ε² for every pair
            logp = torch.log(joint, out=log_buf[: joint.numel()].view_as(joint))
            # rows of m·C terms summed in the input dtype, rows and blocks in float64
            torch.sum(logp.mul_(joint), 1, out=row_sums[:rows])
            acc[n0 * c : n0 * c + rows] += row_sums[:rows]
    return acc.view(n, c).sum(1)


def subnormal_safe_floor(dtype: torch.dtype, k: int) -> float:
    """``ε = 1.01·√(K·tiny)``: the GEMM's products ``ε·(ε/K)`` are normal floats."""
    return math.sqrt(k * torch.finfo(dtype).tiny) * 1.01
