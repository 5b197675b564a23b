"""Fine-tune a run's head on its labels and refit its posterior: what the next round uses.

Shared by the simulated loop (:func:`activevlm.loop.run_loop`) and ``activevlm finetune
--run DIR`` (labels imported by a person), so both leave the run directory in the same state.
Every fine-tuning starts from the pool's (pre-trained) head with all labels so far, and every
refit from the run's base posterior, so a round can be recomputed and labels never count twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.finetune import FinetuneConfig, FinetuneResult, RefitConfig, finetune_head
from activevlm.finetune import refit_posterior as refit
from activevlm.finetune.calibration import crossfit_temperature, tempered
from activevlm.models.head import ProjectionHead
from activevlm.runs.errors import RunError
from activevlm.runs.lock import writes_run
from activevlm.runs.rundir import save_posterior
from activevlm.runs.state import RunState


@dataclass
class AdaptResult:
    """``head`` (fine-tuned), ``posterior`` (refitted; None when the run has none),
    ``finetune`` (the :class:`FinetuneResult`), ``n_labels``, ``seconds``."""

    head: ProjectionHead
    posterior: BayesVLMPosterior | None
    finetune: FinetuneResult
    n_labels: int
    seconds: float


def labelled_rows(pool, state: RunState) -> tuple[np.ndarray, np.ndarray]:
    """Pool rows ``[n]`` of the run's labelled items (sorted) and their labels ``[n]``."""
    ids = pool.items["sample_id"].to_numpy()
    row_of = {sid: i for i, sid in enumerate(ids)}
    missing = [sid for sid in state.labels if sid not in row_of]
    if missing:
        raise ValueError(f"run {state.path}: {len(missing)} labelled sample_id(s) are not in "
                         f"pool {pool.path}, e.g. {missing[:5]}")
    rows = np.sort(np.fromiter((row_of[s] for s in state.labels), dtype=np.int64))
    labels = np.array([state.labels[ids[r]] for r in rows], dtype=np.int64)
    return rows, labels


def _activations(pool, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    act, res = pool.rows(rows)
    return torch.from_numpy(act), None if res is None else torch.from_numpy(res)


@writes_run("state")  # one writer per run; reloads the state once the lock is held
def adapt_run(pool, state: RunState, *, finetune: FinetuneConfig | None = None,
              refit_config: RefitConfig | None = None,
              base: BayesVLMPosterior | None = None, val_rows: np.ndarray | None = None,
              progress: bool = True) -> AdaptResult:
    """Fine-tune ``pool.head`` on all of the run's labels and refit ``base`` with the result.

    ``val_rows``: pool rows whose dataset labels form the validation set (early stopping);
    None holds out ``finetune.val_fraction`` of the run's labels. Writes ``run/head.*`` and,
    when ``base`` is given, ``run/posterior/`` (the refit of ``base``, tempered to the new head
    when ``refit_config.calibrate``: :mod:`activevlm.finetune.calibration`, its record under
    ``data_description["calibration"]``; mode "none" keeps ``base``), both or neither.
    Deterministic for a given set of labels and config.
    """
    start = time.perf_counter()
    rows, labels = labelled_rows(pool, state)
    if len(rows) == 0:
        raise RunError(f"run {state.path} has no labels yet: import some with "
                         "`activevlm labels import` before fine-tuning")
    act, res = _activations(pool, rows)
    val = None
    if val_rows is not None:
        val_rows = np.asarray(val_rows, dtype=np.int64)
        v_labels = pool.items["label"].to_numpy()[val_rows]
        if len(val_rows) == 0 or (v_labels < 0).any():
            raise ValueError(f"pool {pool.path}: the validation rows must be labelled "
                             f"({len(val_rows)} given, {(v_labels < 0).sum()} unlabelled)")
        v_act, v_res = _activations(pool, val_rows)
        val = (v_act, torch.from_numpy(v_labels), v_res)
    y = torch.from_numpy(labels)
    result = finetune_head(pool.head, act, y, pool.text_activations,
                           residual=res, val=val, config=finetune, progress=progress)
    post = None
    if base is not None:
        cfg = refit_config or RefitConfig()
        text_act = torch.from_numpy(pool.text_activations)
        post = refit(base, result.head, act, text_act, image_residual=res, config=cfg,
                     progress=progress)
        if cfg.calibrate and cfg.mode != "none" and len(rows) >= 2 * cfg.calibration_folds:
            def fit_head(train: np.ndarray) -> ProjectionHead:
                return finetune_head(pool.head, act[train], y[train], pool.text_activations,
                                     residual=None if res is None else res[train], val=val,
                                     config=finetune, progress=False).head

            cal = crossfit_temperature(post, fit_head, act, y, text_act, res,
                                       folds=cfg.calibration_folds,
                                       seed=(finetune or FinetuneConfig()).seed)
            post = tempered(post, cal.tau)
            post.data_description["calibration"] = cal.to_dict()
    # the head's files are renamed into place only once the posterior is: a failed write
    # (full disk) leaves the old head with the old posterior
    with result.head.saving(state.dir.head):
        if post is not None:
            save_posterior(post, state.dir.posterior)
    return AdaptResult(result.head, post, result, len(rows), time.perf_counter() - start)
