"""Batch-aware EPIG and BALD: greedy selection with label-free conditioning on each pick.

Repeat ``budget`` times: score the L candidates under the current joint draws (EPIG against
the M target draws, which move too), take the best candidate not yet taken (ties: the lowest
position), and condition the posterior on it
(:class:`~activevlm.acquisition.conditioning.PathwiseConditioning`, MATH.md §6). Candidates
are a prefiltered set (e.g. the best few × budget rows of a one-pass score).

Cost. Re-scoring all L candidates at every pick costs ``budget·L·M·C²·K`` for EPIG, i.e.
``budget·L/N`` one-pass scores of an N-item pool. By default the selection is **lazy**
(Minoux's accelerated greedy with a proven bound): a candidate scored under an earlier state
keeps an upper bound on its current score, only the ``block`` candidates with the highest
bounds are re-scored, and the best fresh score is taken once it is at least every stale
bound (strictly above those of lower positions). Lazy and exact (``lazy=False``) greedy
therefore take the same batch up to the rounding of the scores: they can differ only where
two scores tie within it (float32 scores: ~1e-7 nats).

The bound. A pick moves draw k's embedding of an input by ``−coef_j·δ_{k,j}``
(``coef_j = β_j·u_jᵀx̃``, ``δ_{k,j}`` the picked input's deviation, MATH.md §6), so since
the input's last scoring ``‖Δg_k‖ ≤ A_k = Σ_j |coef_j|·‖δ_{k,j}‖``; let ``ρ_k = A_k/‖g_k‖``
(norm at that scoring).

1. Direction: a vector moved by less than ``ρ`` of its length turns by at most ``arcsin ρ``,
   so ``‖Δĝ_k‖ ≤ χ(ρ_k)``, ``χ(ρ) = ρ·√(2/(1 + √(1 − ρ²)))`` for ``ρ < 1``, else 2.
2. Log-probabilities: the logits ``s·ĝ_k·ĥ_{k,c} (+ b)`` move by ``Δl_c = s·Δĝ_k·ĥ_{k,c}``;
   softmax: ``Δ log p_c = Δl_c − Δ logsumexp``, so ``|Δ log p_{k,c}| ≤ max_c Δl_c −
   min_c Δl_c ≤ s·κ·χ(ρ_k) =: ε_k``, ``κ`` the largest distance between two class
   embeddings of one draw (≤ 2); normalised sigmoids (log-sigmoid is increasing and
   1-Lipschitz): the same with ``κ = 2``. EPIG: ``E = max_k(ε_k + ε_{T,k})``; the targets
   are scored at every pick, so ``ε_{T,k}`` is their actual ``max |Δ log p_{k,c}|`` between
   consecutive scorings (largest over targets), summed since the candidate's scoring (plus
   the drift bound since the targets' last one); a candidate whose bound reaches the best
   fresh score is first *tightened*: its current log-probabilities are read (``O(K·C·D)``,
   against ``O(K·M·C²)`` for its EPIG) and its ε is taken exactly too, the drift bound
   counting only from then. BALD (whose score costs little more than a read):
   ``E = max_k ε_k``. Every joint ``p̂(y, y*)`` (EPIG) or ``p_k(y)/K`` (BALD, the joint of
   label and draw index) moves by a factor in ``[e^{−E}, e^{E}]``.
3. Scores: both are a mutual information ``I = KL(z ‖ π)`` of a joint ``z`` and the product
   ``π`` of its marginals, and ``KL(z' ‖ π') ≤ KL(z' ‖ π)`` (the product of the marginals is
   the closest product), so ``I' ≤ I + Σ (z' − z)·log(z/π) + KL(z' ‖ z)``. With
   ``|z' − z| ≤ t·z``, ``t = e^{E} − 1``: the middle term is at most
   ``t·Σ z|log(z/π)| ≤ t·(I + √(2I))`` (the negative part of ``log(z/π)`` weighs at most the
   total variation, Pinsker; averaged over targets by Jensen), and ``KL(z' ‖ z) ≤ χ²(z' ‖ z)
   ≤ t²``. So a score ``S`` of an earlier state bounds the current one by
   ``S' ≤ S + t·(S + √(2S)) + t²``.

Per pick the bookkeeping is ``O((L + M)·(d + K) + K·D)``; a bound costs ``O(K)`` per
candidate. The bound is a worst case over the direction of each move: on
``benchmarks/acquisition.py``'s problem (c·v ≈ 1e-2) BALD's exceeds the largest actual rise
about 400-fold (the first-order changes of a mutual information largely cancel over draws and
classes; a bound that sees only their size cannot), so lazy selection still re-scores a large
part of the candidates at each pick. Measured there (N = 20000, M = 256, C = 65, K = 100, one
thread): BALD, budget 500 (L = 2000), 396,160 scorings, 45 % of exact greedy's 875,250;
EPIG, budget 100 (L = 400), 20,770, 59 % of 35,050. (The stale scores taken as bounds before
needed about ``L + 16·budget`` but were no bound: EPIG scores rise up to 1.9x in one pick under
strong conditioning.) tests/test_greedy.py checks the bound against every re-scoring of random
problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from activevlm.acquisition.conditioning import PathwiseConditioning, Pick
from activevlm.acquisition.epig import epig_scores
from activevlm.acquisition.heuristics import get_heuristic
from activevlm.bayes.draws import JointDraws
from activevlm.models.links import link_for, link_probs
from activevlm.utils.device import resolve_device
from activevlm.utils.tensors import to_tensor

GREEDY_HEURISTICS = ("epig", "bald")


@dataclass
class GreedyBatch:
    """``positions [budget]`` (int64 rows of the candidate array, in pick order), ``gains
    [budget]`` (the pick's score when taken, float64), ``picks`` (conditioning steps: ``c``,
    ``v``, ``β``), ``evaluations`` (candidate scorings in total, initial pass included)."""

    positions: np.ndarray
    gains: np.ndarray
    picks: list[Pick] = field(default_factory=list)
    evaluations: int = 0


def _chord(rho: np.ndarray) -> np.ndarray:
    """``χ(ρ)``: the largest ``‖b/‖b‖ − a/‖a‖‖`` over ``‖b − a‖ ≤ ρ·‖a‖`` (step 1 above)."""
    r = np.minimum(rho, 1.0)
    return np.where(rho < 1.0, r * np.sqrt(2.0 / (1.0 + np.sqrt(1.0 - r * r))), 2.0)


def score_bound(score: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """Step 3: an upper bound on a mutual information (BALD, EPIG; ``score [n] >= 0``) after
    its joint moved by a factor within ``e^{±log_ratio}`` (``[n]``): ``S + t(S + √(2S)) + t²``,
    ``t = e^{log_ratio} − 1``."""
    s = np.maximum(score, 0.0)
    t = np.expm1(log_ratio)
    return s + t * (s + np.sqrt(2.0 * s)) + t * t


class GreedyScorer:
    """Scores of ``n_cand`` candidates (tracked rows ``0..n_cand−1`` of ``state``; EPIG: the
    targets are rows ``n_cand..P−1``) under the current state, and upper bounds on the scores
    of candidates last scored under earlier states (module docstring). Bookkeeping per tracked
    row and draw, ``[P, K]`` float64; EPIG adds the candidates' log-probabilities at their last
    scoring, ``[L, K, C]`` in the draws' dtype."""

    def __init__(self, state: PathwiseConditioning, n_cand: int, heuristic: str):
        self.state, self.n_cand, self.is_epig = state, n_cand, heuristic == "epig"
        draws = state.draws
        self._targets = np.arange(n_cand, state.num_tracked)
        self._bald = get_heuristic("bald")
        self._link = link_for(draws)
        if self._link == "softmax":  # κ: the largest class-embedding distance of a draw
            h = draws.text_embeddings.double()
            cos = torch.matmul(h, h.transpose(1, 2)).amin()
            kappa = float((2.0 - 2.0 * cos).clamp_min(0.0).sqrt())
        else:
            kappa = 2.0
        self._eps_per_chord = draws.logit_scale * kappa
        shape = (state.num_tracked, draws.num_draws)
        self._drift = np.zeros(shape)  # A_k of each tracked row since its last scoring
        self._inv_norm = np.zeros(shape)  # 1/‖g_k‖ at that scoring
        self.score = np.zeros(n_cand)  # score at the last scoring
        # EPIG: Σ over the targets' past scorings of their ε (max over targets), per draw,
        # and its value when each candidate was scored
        self._target_eps = np.zeros(draws.num_draws)
        self._target_eps_at = np.zeros((n_cand, draws.num_draws) if self.is_epig else (0, 0))
        self._target_probs: torch.Tensor | None = None  # under the current state
        self._target_log_probs: torch.Tensor | None = None  # at the targets' last scoring
        # EPIG candidates: log-probabilities [L, K, C] at the last scoring, and the exact
        # max |Δ log p| per draw from then to the last tightening
        self._log_probs_at: torch.Tensor | None = None
        self._eps_seen = np.zeros((n_cand, draws.num_draws) if self.is_epig else (0, 0))

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """Logits ``[K, n, C]`` of tracked ``rows`` under the current state; restart their
        drift."""
        emb = self.state.embeddings(torch.from_numpy(rows).to(self.state.mean.device))
        self._inv_norm[rows] = 1.0 / emb.norm(dim=2).double().T.cpu().numpy()
        self._drift[rows] = 0.0
        return self.state.draws.logits_from_embeddings(emb)

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``log p`` of the draws' link (normalised sigmoids: softmax of the log-sigmoids)."""
        return torch.log_softmax(logits if self._link == "softmax" else F.logsigmoid(logits),
                                 dim=-1)

    def _read_targets(self) -> None:
        """Target probabilities under the current state; the targets' ε since their last
        scoring, taken exactly (``max |Δ log p|`` over targets and classes, per draw), joins
        the sum."""
        logits = self._read(self._targets)
        log_p = self._log_probs(logits)
        if self._target_log_probs is not None:
            change = (log_p - self._target_log_probs).abs().amax(dim=(1, 2))
            self._target_eps += change.double().cpu().numpy()
        self._target_log_probs = log_p
        self._target_probs = link_probs(logits, self._link)

    def _eps(self, rows: np.ndarray) -> np.ndarray:
        """``ε_k`` ``[n, K]`` of tracked ``rows`` since their last read (steps 1-2)."""
        return self._eps_per_chord * _chord(self._drift[rows] * self._inv_norm[rows])

    def evaluate(self, rows: np.ndarray) -> np.ndarray:
        """Score candidate ``rows`` (int64 ``[n]``) under the current state: ``[n]``."""
        logits = self._read(rows)
        probs = link_probs(logits, self._link)
        if self.is_epig:
            if self._target_probs is None:
                self._read_targets()
            s = epig_scores(probs, self._target_probs)
            self._target_eps_at[rows] = self._target_eps
            log_p = self._log_probs(logits).transpose(0, 1)  # [n, K, C]
            if self._log_probs_at is None:
                self._log_probs_at = log_p.new_empty(self.n_cand, *log_p.shape[1:])
            self._log_probs_at[torch.from_numpy(rows).to(log_p.device)] = log_p
            self._eps_seen[rows] = 0.0
        else:
            s = self._bald(probs)
        self.score[rows] = s.double().cpu().numpy()
        return self.score[rows]

    def tighten(self, rows: np.ndarray) -> None:
        """EPIG: read candidate ``rows``' current log-probabilities (``O(K·C·D)`` each, against
        ``O(K·M·C²)`` for a scoring) and take their ε since their scoring exactly."""
        log_p = self._log_probs(self._read(rows)).transpose(0, 1)  # [n, K, C]
        base = self._log_probs_at[torch.from_numpy(rows).to(log_p.device)]
        self._eps_seen[rows] = (log_p - base).abs().amax(2).double().cpu().numpy()

    def upper(self, rows: np.ndarray) -> np.ndarray:
        """Upper bounds ``[n]`` on the current scores of candidate ``rows`` (step 3)."""
        eps = self._eps(rows)
        if self.is_epig:  # + the exact ε up to the last tightening, + the targets' ε
            eps += (self._eps_seen[rows] + self._target_eps + self._eps(self._targets).max(0)
                    - self._target_eps_at[rows])
        return score_bound(self.score[rows], eps.max(1))

    def condition(self, row: int) -> Pick:
        """Condition the state on candidate ``row``; the drift of every tracked row and draw k
        grows by ``|coef|·‖δ_k‖``."""
        st = self.state
        delta = st.embeddings([row])[:, 0].double() - st.mean[row].double()  # [K, D]
        u = st.a_tilde_inv @ st.act[row]
        pick = st.condition(row)
        coef = (pick.beta * (st.act @ u)).abs()
        self._drift += torch.outer(coef, delta.norm(dim=1)).cpu().numpy()
        self._target_probs = None
        return pick


def greedy_batch(
    posterior,
    text_act,
    cand_act,
    budget: int,
    *,
    heuristic: Literal["epig", "bald"] = "epig",
    target_act=None,
    cand_residual=None,
    target_residual=None,
    n_draws: int = 100,
    generator: torch.Generator,
    lazy: bool = True,
    block: int = 16,
    loss: str | None = None,
    device: str | torch.device | None = "auto",
) -> GreedyBatch:
    """Greedy batch of ``budget`` candidates by EPIG or BALD with label-free conditioning.

    ``posterior``: a ``BayesVLMPosterior``; ``text_act [C, d_txt]`` class prompt activations;
    ``cand_act [L, d_img]`` candidate activations (+ ``cand_residual [L, D]`` for SigLIP);
    EPIG needs ``target_act [M, d_img]`` (+ ``target_residual``), a sample of the target
    distribution (a few hundred suffice: the cost per pick is linear in M). ``n_draws`` K
    joint draws come from ``generator`` (CPU; same seed -> same batch on any device).
    ``device="auto"``: CUDA when present, else CPU. ``lazy``/``block``: see the module
    docstring (``block`` candidates are re-scored at once; ``lazy=False`` re-scores all of
    them at every pick). Memory: ``K·(L+M)·D`` floats of tracked embeddings, and for the
    bounds ``K·(L+M)`` float64 plus ``K·(L+M)·C`` floats (EPIG).
    """
    if heuristic not in GREEDY_HEURISTICS:
        raise ValueError(f"greedy selection supports {GREEDY_HEURISTICS}, got {heuristic!r}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n_cand = cand_act.shape[0]
    if not 0 <= budget <= n_cand:
        raise ValueError(f"budget must lie in [0, {n_cand}] (the number of candidates), "
                         f"got {budget}")
    is_epig = heuristic == "epig"
    if is_epig and (target_act is None or target_act.shape[0] == 0):
        raise ValueError("greedy EPIG needs a non-empty target_act [M, d_img]")
    if not is_epig and target_act is not None:
        raise ValueError("target_act is only used by greedy EPIG, not BALD")
    dev = resolve_device(device)
    draws = JointDraws.from_posterior(posterior, text_act, n_draws, generator, device=dev)
    act = to_tensor(cand_act, dev, draws.dtype)
    residual = None if cand_residual is None else to_tensor(cand_residual, dev, draws.dtype)
    if is_epig:
        act = torch.cat([act, to_tensor(target_act, dev, draws.dtype)])
        if (cand_residual is None) != (target_residual is None):
            raise ValueError("give residuals for both candidates and targets, or for neither")
        if residual is not None:
            residual = torch.cat([residual, to_tensor(target_residual, dev, draws.dtype)])
    state = PathwiseConditioning(posterior, draws, text_act, act, residual, loss=loss)
    scorer = GreedyScorer(state, n_cand, heuristic)
    scorer.evaluate(np.arange(n_cand))
    evaluations = n_cand
    fresh = np.ones(n_cand, dtype=bool)  # scored under the current state
    tight = np.zeros(n_cand, dtype=bool)  # EPIG: bound tightened under the current state
    taken = np.zeros(n_cand, dtype=bool)
    positions, gains = [], []
    for _ in range(budget):
        while True:
            stale = np.flatnonzero(~fresh & ~taken)
            value = np.where(taken, -np.inf, scorer.score)
            value[stale] = scorer.upper(stale)
            best = int(np.argmax(value))  # the first maximum: ties go to the lowest position
            if fresh[best]:
                break
            if lazy and is_epig and not tight[best]:  # first tighten the highest bounds
                loose = stale[~tight[stale]]
                loose = loose[np.argsort(-value[loose], kind="stable")[:block]]
                scorer.tighten(loose)
                tight[loose] = True
                continue
            if lazy:  # re-score only the highest bounds
                stale = stale[np.argsort(-value[stale], kind="stable")[:block]]
            scorer.evaluate(stale)
            fresh[stale] = True
            evaluations += len(stale)
        positions.append(best)
        gains.append(scorer.score[best])
        taken[best] = True
        scorer.condition(best)
        fresh[:] = tight[:] = False
    return GreedyBatch(np.asarray(positions, dtype=np.int64), np.asarray(gains, dtype=np.float64),
                       list(state.picks), evaluations)
