"""Calibrating the refitted posterior to the fine-tuned head, on the acquired labels only.

After fine-tuning, the Laplace covariance (fitted on thousands of source items, then updated
with the labels) no longer matches the head it is centred on: its predictive is flatter than
the data warrant and its ECE rises with labels while the head's falls. One scalar fixes its
scale: **tempering** by ``τ > 0`` multiplies both modalities' covariances by ``τ``, i.e.
``(n, λ) → (n/τ, λ/τ)``, since ``Ã ⊗ B̃`` with ``Ã = √n·A + √λ·I`` (and ``B̃`` alike)
scales by ``1/τ``. Small ``τ`` approaches the MAP head, ``τ = 1`` leaves the posterior as it is.

``τ`` is chosen by **cross-fitting on the run's own labels** (never a labelled validation or
test split): the labels are split into ``folds`` seeded parts; for each, a head fine-tuned on
the other parts (same :class:`FinetuneConfig`, same early-stopping data as the round itself)
carries the posterior's covariance (recentred on it), and the probit predictive's
log-likelihood of the held-out part is evaluated on a log grid of ``τ``; the ``τ`` of the best
summed log-likelihood wins (ties: the smaller). The grid reaches ``2⁻¹⁴`` (practically the MAP
head), so the held-out likelihood of the chosen predictive is never below the MAP head's.

Tempering leaves ``c·v`` (how far one label moves the posterior, MATH.md §6) unchanged:
``c = n·γ`` scales by ``τ^{-1/2}`` and ``v = ãᵀÃ⁻¹ã`` by ``τ^{1/2}``. Calibrating the
predictive and strengthening conditioning are separate matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.bayes.probcosine import cosine_moments, probit_probs
from activevlm.models.head import ProjectionHead, stack_bias
from activevlm.models.links import link_for
from activevlm.utils.tensors import to_tensor

TAU_GRID = tuple(2.0 ** k for k in range(-14, 3))
"""Candidate temperatures ``2⁻¹⁴ … 4`` (17 values)."""


@dataclass(frozen=True)
class Calibration:
    """The chosen temperature ``tau``, the held-out NLL per grid value (``nll [len(grid)]``,
    mean over the run's labels), the ``grid`` and the number of labels ``n``."""

    tau: float
    nll: tuple[float, ...]
    grid: tuple[float, ...]
    n: int

    def to_dict(self) -> dict:
        return {"tau": self.tau, "n_labels": self.n, "folds_nll": dict(zip(
            [f"{t:g}" for t in self.grid], [round(v, 6) for v in self.nll], strict=True))}


def tempered(posterior: BayesVLMPosterior, tau: float) -> BayesVLMPosterior:
    """``posterior`` with both covariances multiplied by ``tau > 0`` (module docstring)."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")

    def scale(m):
        return m.with_prior(prior_precision=m.prior_precision / tau,
                            pseudo_count=m.pseudo_count / tau)

    return replace(posterior, image=scale(posterior.image), text=scale(posterior.text))


def recentred_on(posterior: BayesVLMPosterior, head: ProjectionHead) -> BayesVLMPosterior:
    """The posterior's covariances centred on ``head``'s projections."""
    W_img = stack_bias(head.image_weight, head.image_bias).detach()
    W_txt = stack_bias(head.text_weight, head.text_bias).detach()
    return replace(posterior, image=posterior.image.recentred(W_img),
                   text=posterior.text.recentred(W_txt), head=head)


@torch.no_grad()
def heldout_log_likelihood(posterior: BayesVLMPosterior, act: torch.Tensor,
                           labels: torch.Tensor, text_act: torch.Tensor,
                           residual: torch.Tensor | None = None,
                           grid: tuple[float, ...] = TAU_GRID) -> np.ndarray:
    """``Σ_i log p_τ(y_i | x_i)`` under the probit predictive of ``posterior`` tempered by each
    ``τ`` of ``grid``: ``act [n, d_img]``, ``labels [n]``, ``text_act [C, d_txt]`` ->
    ``[len(grid)]`` float64. Tempering scales ``v(a)`` and ``v(t)`` by ``τ`` (the row
    covariances ``B̃⁻¹`` carry no ``τ`` then), so the moments are computed once."""
    img, txt = posterior.image, posterior.text
    dev, dt = img.W_map.device, img.W_map.dtype
    mu_g, v_g = img.embedding_moments(to_tensor(act, dev, dt),
                                      None if residual is None else to_tensor(residual, dev, dt))
    mu_h, v_h = txt.embedding_moments(to_tensor(text_act, dev, dt))
    s, b = float(posterior.head.logit_scale), posterior.head.logit_bias
    link = link_for(posterior.head)
    y = torch.as_tensor(labels, dtype=torch.long, device=dev)
    out = np.empty(len(grid))
    for i, tau in enumerate(grid):
        m, v = cosine_moments(mu_g, tau * v_g, mu_h, tau * v_h, img.B_inv, txt.B_inv.to(img.B_inv))
        p = probit_probs(s * m + (0.0 if b is None else float(b)), s * s * v, link).double()
        out[i] = float(p[torch.arange(len(y)), y].clamp_min(1e-300).log().sum())
    return out


def fold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint, seeded parts of ``range(n)`` of near-equal size."""
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, folds)]


def crossfit_temperature(
    posterior: BayesVLMPosterior,
    fit_head: Callable[[np.ndarray], ProjectionHead],
    act: torch.Tensor,
    labels: torch.Tensor,
    text_act: torch.Tensor,
    residual: torch.Tensor | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    grid: tuple[float, ...] = TAU_GRID,
) -> Calibration:
    """The temperature of ``posterior`` chosen by cross-fitting (module docstring).

    ``fit_head(train_rows) -> head``: fine-tunes a head on the labelled rows ``train_rows``
    (indices into ``act [n, d_img]`` / ``labels [n]``); ``text_act [C, d_txt]``: class
    prompt activations; ``residual [n, D]``: SigLIP's image residual. Needs at least
    ``2·folds`` labels.
    """
    n = len(labels)
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"cross-fitting needs folds >= 2 and at least 2 labels per fold, got "
                         f"folds={folds} with {n} labels")
    total = np.zeros(len(grid))
    everything = np.arange(n)
    for held in fold_indices(n, folds, seed):
        train = np.setdiff1d(everything, held)
        post = recentred_on(posterior, fit_head(train))
        total += heldout_log_likelihood(post, act[held], labels[held], text_act,
                                        None if residual is None else residual[held], grid)
    best = max(range(len(grid)), key=lambda i: (total[i], -grid[i]))
    nll = tuple(float(-t / n) for t in total)
    return Calibration(float(grid[best]), nll, tuple(grid), n)

