"""Prior precision by maximising the Laplace evidence of a KFAC posterior (MATH.md §1).

    log Z(λ) = −(λ/2)‖W*‖²_F + (P/2) log λ − ½[d_out·log det Ã + d_in·log det B̃] + const,
    Ã = √n·A + √λ·I  (d_in × d_in),  B̃ = √n·B + √λ·I  (d_out × d_out),  P = d_in·d_out,

evaluated from the eigenvalues of ``A`` and ``B`` (computed once by the caller).
"""

from __future__ import annotations

import math
import warnings

import torch
from scipy.optimize import minimize_scalar


def log_evidence(
    prior_precision: float | torch.Tensor,
    weight_sqnorm: float,
    eigvals_A: torch.Tensor,
    eigvals_B: torch.Tensor,
    pseudo_count: float = 1.0,
) -> torch.Tensor:
    """Laplace log evidence (without λ-independent constants), float64.

    ``prior_precision``: a scalar or a tensor ``[L]`` of λ values (vectorised);
    ``weight_sqnorm`` = ‖W*‖²_F; ``eigvals_A [d_in]``, ``eigvals_B [d_out]``.
    Returns a tensor of the shape of ``prior_precision``.
    """
    lam = torch.as_tensor(prior_precision, dtype=torch.float64)
    a = eigvals_A.detach().double().cpu().clamp_min(0.0)
    b = eigvals_B.detach().double().cpu().clamp_min(0.0)
    d_in, d_out = a.numel(), b.numel()
    sn, sl = math.sqrt(pseudo_count), lam.sqrt()[..., None]
    logdet_A = torch.log(sn * a + sl).sum(-1)
    logdet_B = torch.log(sn * b + sl).sum(-1)
    return (-0.5 * lam * weight_sqnorm + 0.5 * d_in * d_out * torch.log(lam)
            - 0.5 * (d_out * logdet_A + d_in * logdet_B))


def optimize_prior_precision(
    weight: torch.Tensor | float,
    eigvals_A: torch.Tensor,
    eigvals_B: torch.Tensor,
    pseudo_count: float = 1.0,
    *,
    bounds: tuple[float, float] = (1e-6, 1e10),
    grid_size: int = 161,
) -> float:
    """The λ maximising :func:`log_evidence` within ``bounds``.

    ``weight``: the MAP matrix ``W* [d_out, d_in]`` or its squared Frobenius norm. A log-spaced
    grid of ``grid_size`` points brackets the best cell, then bounded Brent
    (``scipy.optimize.minimize_scalar``) refines log λ inside it. Warns when the optimum sits
    on a bound.
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    sq = float((weight.detach().double() ** 2).sum()) if torch.is_tensor(weight) else float(weight)
    grid = torch.linspace(math.log(lo), math.log(hi), grid_size, dtype=torch.float64)
    values = log_evidence(grid.exp(), sq, eigvals_A, eigvals_B, pseudo_count)
    i = int(values.argmax())
    if i in (0, grid_size - 1):
        warnings.warn(f"evidence optimum at the bound λ = {math.exp(grid[i]):.3g} of {bounds}",
                      stacklevel=2)
        return float(math.exp(grid[i]))
    res = minimize_scalar(
        lambda t: -float(log_evidence(math.exp(t), sq, eigvals_A, eigvals_B, pseudo_count)),
        bounds=(float(grid[i - 1]), float(grid[i + 1])), method="bounded",
        options={"xatol": 1e-10},
    )
    return float(math.exp(res.x))
