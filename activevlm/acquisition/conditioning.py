"""Label-free conditioning of the image-projection posterior on picks, pathwise on joint draws
(MATH.md §6).

Labelling an image with activation ``ã`` (bias-augmented) adds ``n·(ããᵀ ⊗ H_a)`` to the
precision ``Ã ⊗ B̃``; ``H_a`` is the per-sample GGN of MATH.md §1, which does not depend on
the label. Projected onto the posterior's row factor, ``H_a ≈ γ·B̃`` with
``γ = tr(B̃⁻¹H_a)/D``, the update stays Kronecker: ``Ã' = Ã + c·ããᵀ``, ``c = n·γ``.

``H_a`` is taken under the **MAP head** (W* for both projections, the class texts as
candidates, InfoNCE or SigLIP's sigmoid loss as in :mod:`activevlm.bayes.kfac`): the same
predictive the KFAC factor ``B`` was estimated under. Conditioning never moves W*, so ``γ`` of
every input is fixed and is computed once.

Every joint draw is updated exactly, without re-sampling: with ``u = Ã⁻¹ã``, ``v = ãᵀu``,
``β = (1 − 1/√(1 + c·v))/v`` and ``δ_k = (W_k − W*)ã``,
``W_k' = W* + (W_k − W*)(I − β·ã uᵀ)`` is a draw of ``MN(W*, B̃⁻¹, Ã'⁻¹)``; on embeddings,
``g_k'(x) = g_k(x) − β·(uᵀx̃)·δ_k``. ``Ã⁻¹`` follows by Sherman–Morrison,
``Ã'⁻¹ = Ã⁻¹ − c·uuᵀ/(1 + c·v)``, so the next pick's ``u``, ``v`` and ``δ`` use the updated
state. The text projection's posterior is left unchanged (an image label informs ``W_img``).

The updates are additive, ``g_k^{(J)}(x) = g_k(x) − Σ_{j<J} β_j (u_jᵀx̃) δ_{k,j}``, with
``u_j``, ``β_j``, ``δ_j`` independent of ``x``; so they are **deferred**: a pick records
``(u_j, β_j, δ_j)`` and an input's embeddings catch up only when they are read, as one matrix
product ``[R, J'] @ [J', K·D]`` over the picks it missed. A pick costs ``O(d² + K·D)`` plus
the catch-up of the rows read afterwards (greedy selection reads a few blocks of candidates
per pick), instead of a memory-bound pass over all ``K·P·D`` tracked embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from activevlm.bayes.draws import JointDraws
from activevlm.bayes.kfac import LOSSES
from activevlm.utils.tensors import to_tensor


def curvature_scale(
    posterior, text_act, act, residual=None, *, loss: str | None = None
) -> torch.Tensor:
    """``γ(a) = tr(B̃⁻¹ H_a)/D`` under the MAP head for each input: ``act [n, d_img]``
    (+ ``residual [n, D]``), class text activations ``text_act [C, d_txt]`` -> ``[n]`` float64.

    ``loss``: "infonce" | "sigmoid" (None: "sigmoid" when the head has a logit bias). Uses
    ``tr(B̃⁻¹ J Yᵀ G Y J) = tr(G·Q)`` with ``Q = (YJ) B̃⁻¹ (YJ)ᵀ [C, C]`` expanded, so no
    ``[n, D, D]`` tensor is formed: ``O(n·C·D + n·D²)``.
    """
    head = posterior.head
    loss = loss or ("sigmoid" if head.logit_bias is not None else "infonce")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    post = posterior.image
    dev, f64 = post.W_map.device, torch.float64
    a = to_tensor(act, dev, f64)
    g = post.augment(a).to(f64) @ post.W_map.to(f64).T  # [n, D]
    if residual is not None:
        g = g + to_tensor(residual, dev, f64)
    h = head.to(dev, f64).text_embeddings(to_tensor(text_act, dev, f64))
    Y = F.normalize(h, dim=-1)  # [C, D]
    B = post.B_inv.to(f64)
    rho2 = (g * g).sum(1)  # [n]
    gh = g / rho2.sqrt()[:, None]
    K = gh @ Y.T  # cosines [n, C]
    YB = Y @ B  # [C, D]
    YBY_diag = (YB * Y).sum(1)  # [C]
    YBg = gh @ YB.T  # [n, C]
    gBg = ((gh @ B) * gh).sum(1)  # [n]
    logits = head.logit_scale * K
    if loss == "infonce":
        w = torch.softmax(logits, dim=1)
    else:
        sig = torch.sigmoid(logits + (head.logit_bias or 0.0))
        w = sig * (1 - sig)
    q_diag = YBY_diag - 2 * YBg * K + gBg[:, None] * K**2  # Q_cc
    tr = (w * q_diag).sum(1)
    if loss == "infonce":  # − wᵀQw
        wK = (w * K).sum(1)
        wYBYw = ((w @ YB) * (w @ Y)).sum(1)
        tr = tr - (wYBYw - 2 * (w * YBg).sum(1) * wK + gBg * wK**2)
    return head.logit_scale**2 * tr / rho2 / post.out_dim


@dataclass(frozen=True)
class Pick:
    """One conditioning step: the tracked row, ``c``, ``v = ãᵀÃ⁻¹ã`` before the pick, ``β``.
    The pick's own embedding variance shrinks by the factor ``1/(1 + c·v)``."""

    row: int
    c: float
    v: float
    beta: float


class PathwiseConditioning:
    """K joint draws evaluated on ``P`` tracked inputs, conditioned pick by pick.

    State: ``mean [P, D]`` (``W*x̃ (+ r)``), ``deviation [K, P, D]`` (``g_k(x) − g*(x)``, all
    picks applied), ``act [P, d]`` (augmented, float64), ``curvature [P]`` (``c = n·γ`` of each
    input), ``a_tilde_inv [d, d]`` (float64, the current column covariance ``Ã⁻¹``). The class
    side (text draws, logit scale/bias, link) is ``draws``'s and never changes. Memory:
    ``K·P·D`` tracked deviations plus ``K·D`` per pick for the deferred updates.
    """

    def __init__(self, posterior, draws: JointDraws, text_act, act, residual=None,
                 *, loss: str | None = None):
        post = posterior.image
        dev, dt = draws.device, draws.dtype
        a = to_tensor(act, dev, dt)
        if a.ndim != 2 or a.shape[1] != post.in_dim:
            raise ValueError(f"tracked activations must be [P, {post.in_dim}], "
                             f"got {list(a.shape)}")
        if residual is not None and tuple(residual.shape) != (a.shape[0], post.out_dim):
            raise ValueError(f"residual must be [{a.shape[0]}, {post.out_dim}], "
                             f"got {list(residual.shape)}")
        if draws.image_bias_column != post.has_bias:
            raise ValueError("draws and posterior disagree on the image bias column")
        self.draws = draws
        aug = post.augment(a.to(post.W_map.device)).to(device=dev, dtype=dt)
        self.mean = aug @ post.W_map.to(device=dev, dtype=dt).T
        if residual is not None:
            self.mean = self.mean + to_tensor(residual, dev, dt)
        # [K, D, d] @ [d, P] as one matmul, then [K, P, D]
        self._deviation = (
            torch.matmul(draws.image_weight, aug.T).transpose(1, 2) - aug @ post.W_map.to(
                device=dev, dtype=dt).T
        ).contiguous()
        self.act = aug.to(torch.float64)
        self.curvature = post.pseudo_count * curvature_scale(
            posterior, text_act, a, residual, loss=loss).to(dev)
        self.a_tilde_inv = post.A_tilde_inv.to(device=dev, dtype=torch.float64).clone()
        self.picks: list[Pick] = []
        k, p, d_out = self._deviation.shape
        # deferred updates, rows 0..J-1 of growing buffers: β_j·u_j [J, d], δ_j [J, K·D];
        # _applied [P]: how many picks each tracked row has absorbed
        self._beta_u = torch.empty(0, self.act.shape[1], device=dev, dtype=torch.float64)
        self._delta = torch.empty(0, k * d_out, device=dev, dtype=dt)
        self._applied = torch.zeros(p, dtype=torch.long, device=dev)

    @property
    def num_tracked(self) -> int:
        return self.mean.shape[0]

    @property
    def deviation(self) -> torch.Tensor:
        """``[K, P, D]`` deviations of every tracked input with all picks applied."""
        self._catch_up(torch.arange(self.num_tracked, device=self.mean.device))
        return self._deviation

    def _catch_up(self, rows: torch.Tensor) -> None:
        """Apply to ``rows`` (unique, ``[R]``) the picks they have not seen, as one product
        ``coef [R, J'] @ δ [J', K·D]`` with ``coef[r, j] = β_j·u_jᵀx̃_r`` (0 where applied)."""
        n_picks = len(self.picks)
        seen = self._applied[rows]
        behind = seen < n_picks
        if not bool(behind.any()):
            return
        rows, seen = rows[behind], seen[behind]
        first = int(seen.min())
        coef = self.act[rows] @ self._beta_u[first:n_picks].T  # [R, J']
        missed = torch.arange(first, n_picks, device=rows.device)[None, :] >= seen[:, None]
        coef = (coef * missed).to(self._delta.dtype)
        k, _, d_out = self._deviation.shape
        update = (coef @ self._delta[first:n_picks]).view(len(rows), k, d_out)
        self._deviation[:, rows] -= update.transpose(0, 1)
        self._applied[rows] = n_picks

    def embeddings(self, rows=None) -> torch.Tensor:
        """Current per-draw unnormalised embeddings ``[K, n, D]`` of tracked ``rows``."""
        if rows is None:
            return self.deviation + self.mean
        rows = torch.as_tensor(rows, device=self.mean.device)
        self._catch_up(torch.unique(rows))
        return self._deviation[:, rows] + self.mean[rows]

    def probs(self, rows=None) -> torch.Tensor:
        """Current class probabilities ``[K, n, C]`` of tracked ``rows`` (all when None)."""
        return self.draws.probs_from_embeddings(self.embeddings(rows))

    def condition(self, row: int) -> Pick:
        """Fold tracked input ``row`` into the posterior (label-free); every draw's embeddings
        follow, deferred until they are read."""
        self._catch_up(torch.tensor([row], device=self.mean.device))
        n_picks = len(self.picks)
        a = self.act[row]
        u = self.a_tilde_inv @ a  # [d]
        v = float(a @ u)
        c = float(self.curvature[row])
        beta = (1.0 - (1.0 + c * v) ** -0.5) / v
        delta = self._deviation[:, row].reshape(-1)  # δ_k  [K·D]
        if n_picks == len(self._delta):  # grow the buffers geometrically
            self._beta_u, self._delta = _doubled(self._beta_u), _doubled(self._delta)
        self._beta_u[n_picks] = beta * u
        self._delta[n_picks] = delta
        self.a_tilde_inv -= (c / (1.0 + c * v)) * torch.outer(u, u)
        pick = Pick(int(row), c, v, beta)
        self.picks.append(pick)
        return pick


def _doubled(buf: torch.Tensor) -> torch.Tensor:
    """``buf [J, W]`` followed by ``max(1, J)`` uninitialised rows: ``[J + max(1, J), W]``."""
    return torch.cat([buf, buf.new_empty(max(1, len(buf)), buf.shape[1])])
