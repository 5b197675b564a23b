"""Stream a pool through joint draws and a heuristic, one chunk in memory at a time; the
MAP head's class probabilities of pool rows."""

from __future__ import annotations

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from activevlm.acquisition.heuristics import Heuristic, get_heuristic
from activevlm.bayes.draws import JointDraws
from activevlm.bayes.marginal_draws import MarginalDraws
from activevlm.models.head import ProjectionHead
from activevlm.utils.tensors import to_tensor


def score_pool(
    draws: JointDraws | MarginalDraws,
    pool_act,
    heuristic: str | Heuristic,
    *,
    residual=None,
    target_probs: torch.Tensor | None = None,
    external_scores=None,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """Scores ``[N]`` (float64) of every pool row under ``heuristic``.

    ``pool_act [N, d_img]`` is any array-like with ``shape`` and row slicing (ndarray, memmap,
    tensor, ``Pool.image_activations``); ``residual [N, D]`` likewise (SigLIP). Only
    ``chunk_size`` rows and their ``[K, chunk, C]`` probabilities are in memory at once.
    EPIG needs ``target_probs [K, M, C]`` from the same draws
    (``draws.probs_chunked(target_act)``); ``random`` a seeded ``generator``; ``vilu``
    ``external_scores [N]``. Heuristics that ignore probabilities are evaluated in one go.
    ``MarginalDraws`` (exact per input only) serve ``per_input`` heuristics.
    """
    h = get_heuristic(heuristic)
    if not draws.joint_across_inputs and h.uses_probs and not h.per_input:
        raise ValueError(
            f"heuristic {h.name!r} reads more than one input's predictive: it needs JointDraws "
            "(draw k the same model for every input), not MarginalDraws (exact per input only)"
        )
    n = pool_act.shape[0]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if residual is not None and residual.shape[0] != n:
        raise ValueError(f"residual has {residual.shape[0]} rows, pool_act has {n}")
    if target_probs is not None:
        if target_probs.ndim != 3 or target_probs.shape[0] != draws.num_draws:
            raise ValueError(
                f"target_probs must be [K={draws.num_draws}, M, C] from the same draws, "
                f"got {list(target_probs.shape)}"
            )
        target_probs = target_probs.to(device=draws.device, dtype=draws.dtype)
    ext = None if external_scores is None else to_tensor(external_scores, draws.device,
                                                         torch.float64)
    if not h.uses_probs:
        placeholder = torch.empty(0, n, 0, device=draws.device)
        return h(placeholder, target_probs=target_probs, generator=generator,
                 external_scores=ext).double().cpu().numpy()

    out = np.empty(n, dtype=np.float64)
    columns = (TextColumn(f"scoring ({h.name}, K={draws.num_draws})"), BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("score", total=n)
        for i in range(0, n, chunk_size):
            j = min(i + chunk_size, n)
            probs = draws.probs(pool_act[i:j], None if residual is None else residual[i:j])
            scores = h(probs, target_probs=target_probs, generator=generator,
                       external_scores=None if ext is None else ext[i:j])
            out[i:j] = scores.double().cpu().numpy()
            bar.advance(task, j - i)
    return out


def map_probs(pool, head: ProjectionHead, rows: np.ndarray,
              chunk_size: int = 8192) -> np.ndarray:
    """Class probabilities ``[len(rows), C]`` of the deterministic ``head`` through its link
    (softmax, or normalised sigmoids for SigLIP), read ``chunk_size`` rows at a time."""
    rows = np.asarray(rows, dtype=np.int64)
    text = head.text_embeddings(torch.from_numpy(np.asarray(pool.text_activations)))
    out = [head.probs(pool.image_embeddings(rows[i:i + chunk_size], head), text)
           for i in range(0, len(rows), chunk_size)]
    return torch.cat(out).numpy() if out else np.empty((0, len(pool.classnames)))
