"""``run_loop``: a simulated-oracle active-learning campaign in one run directory, resumable
round by round.

Run directory (``out_dir``): ``loop.json`` (config and seed), ``state.json`` (the
:class:`RunState` every ``select`` uses), ``round_NNN/`` (queue, scores, oracle labels,
the round's head), ``head.*`` and ``posterior/`` (the current model, what the next round
selects with), ``posterior_base/`` (before fine-tuning) and ``metrics.jsonl`` (one row per
finished round, row 0 = zero-shot). A round counts as done once its metrics row is written;
a killed run redoes only the unfinished round, with the same seeds, so it produces exactly
the rows an uninterrupted run would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from activevlm.acquisition import STRATEGIES
from activevlm.acquisition.conditioning import curvature_scale
from activevlm.bayes.posterior import BayesVLMPosterior
from activevlm.loop.config import LoopConfig
from activevlm.loop.evaluate import evaluate_model
from activevlm.loop.failure import failure_probabilities
from activevlm.loop.oracle import answer_queue
from activevlm.runs.adapt import adapt_run, labelled_rows
from activevlm.runs.checks import check_split, check_target
from activevlm.runs.lock import writes_run
from activevlm.runs.pool_link import link_pool
from activevlm.runs.rundir import RunDir, base_posterior, load_posterior
from activevlm.runs.select import select_round
from activevlm.runs.state import RunState
from activevlm.utils.io import atomic_write_json, atomic_write_text, dumps_strict

TIMING_COLUMNS = ("select_seconds", "finetune_seconds", "eval_seconds", "seconds")


def read_metrics(out_dir: str | Path) -> pd.DataFrame:
    """The rows of ``out_dir/metrics.jsonl`` (empty frame when there are none)."""
    df = pd.DataFrame(_metric_rows(Path(out_dir)))
    for col in df.columns:  # null (a non-finite number) -> NaN in numeric columns
        values = df[col].dropna()
        if df[col].dtype == object and len(values) < len(df) and values.map(
                lambda v: isinstance(v, int | float) and not isinstance(v, bool)).all():
            df[col] = df[col].astype(float)
    return df


def _metric_rows(out_dir: Path) -> list[dict]:
    """The rows of ``out_dir/metrics.jsonl`` as written (null for a non-finite number)."""
    path = RunDir(out_dir).metrics
    rows = []
    for i, line in enumerate(path.read_text().splitlines() if path.exists() else []):
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON (column {e.colno}); "
                                 "it was not written by activevlm loop") from e
    return rows


def _write_metrics(out_dir: Path, rows: list[dict]) -> None:
    """One strict JSON object per line (NaN and inf written as null)."""
    atomic_write_text(RunDir(out_dir).metrics, "".join(dumps_strict(r) + "\n" for r in rows))


def _check_loop_file(out_dir: Path, config: LoopConfig, seed: int, model_id: str) -> None:
    """Write ``loop.json`` on the first call; later calls must match it."""
    record = {"config": json.loads(json.dumps(config.to_dict())), "seed": seed,
              "model_id": model_id}
    path = RunDir(out_dir).loop
    if not path.exists():
        atomic_write_json(path, record)
        return
    old = json.loads(path.read_text())
    for key in ("seed", "model_id"):
        if old.get(key) != record[key]:
            raise ValueError(f"{path}: this run has {key}={old.get(key)!r}, not "
                             f"{record[key]!r}; use another output directory")
    defaults = json.loads(json.dumps(LoopConfig().to_dict()))
    changed = [k for k in changed_settings(old["config"], record["config"], defaults)
               if k != "rounds"]
    if changed:
        raise ValueError(f"{path}: the run was made with other loop settings for {changed}; "
                         "use another output directory (only 'rounds' may change)")
    if old["config"]["rounds"] != config.rounds:
        atomic_write_json(path, record)


_MISSING = object()


def changed_settings(old, new, default, prefix: str = "") -> list[str]:
    """Dotted names of the settings in ``new`` that differ from ``old``; a setting the stored
    run predates (missing in ``old``) counts as unchanged when ``new`` has its default."""
    if isinstance(new, dict):
        sub = old if isinstance(old, dict) else {}
        dflt = default if isinstance(default, dict) else {}
        if old is not _MISSING and not isinstance(old, dict):
            return [prefix.rstrip(".")]
        return [name for k, v in new.items() for name in changed_settings(
            sub.get(k, _MISSING), v, dflt.get(k), f"{prefix}{k}.")]
    same = new == default if old is _MISSING else old == new
    return [] if same else [prefix.rstrip(".")]


def _rows_of(pool, domain, split) -> np.ndarray:
    rows = pool.indices(domain=domain, split=split, labelled=True)
    if len(rows) == 0:
        raise ValueError(f"pool {pool.path}: no labelled items with domain={domain!r}, "
                         f"split={split!r}")
    return rows


def run_loop(pool, config: LoopConfig, out_dir: str | Path, seed: int = 0, *,
             posterior: BayesVLMPosterior | str | Path | None = None,
             progress: bool = True, log: Callable = print,
             on_round: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run (or resume) ``config.rounds`` rounds in ``out_dir``; returns all metrics rows.

    Row columns: ``round``, ``n_labels``, ``n_new``, ``strategy``, ``targeted``, ``seed``,
    ``n_test``, ``accuracy``, ``nll``, ``ece``, ``brier``, ``bayes_*`` (the same for the
    posterior predictive), ``failure_source`` (vilu strategies: "vilu" | "msp"),
    ``best_epoch`` (fine-tuning), what the round queued (``target_share``: the fraction in
    ``target_domain``, NaN without one; ``n_classes_new``: distinct true classes) and the
    timings ``select_seconds``, ``finetune_seconds``, ``eval_seconds``, ``seconds``.
    ``posterior``: the base posterior (object or folder); default: fitted on
    ``config.posterior_split``/``posterior_domains`` of the pool.
    ``on_round(row)`` is called after each newly finished round.
    """
    out_dir = Path(out_dir).resolve()  # checks and writes see the same folder
    # checked before any posterior is fitted or any file is written
    check_target(pool, config.target_domain)
    for option, split in (("pool_split", config.select.pool_split),
                          ("val_split", config.val_split), ("test_split", config.test_split)):
        check_split(pool, split, option)
    val_rows = (None if config.val_split is None else
                _rows_of(pool, config.target_domain, config.val_split))
    return _run_loop(pool, config, out_dir, seed, val_rows, posterior=posterior,
                     progress=progress, log=log, on_round=on_round)


@writes_run("out_dir")  # one writer per run directory
def _run_loop(pool, config: LoopConfig, out_dir: Path, seed: int, val_rows: np.ndarray | None, *,
              posterior, progress: bool, log: Callable, on_round) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_loop_file(out_dir, config, seed, pool.model_id)
    state = RunState.open_or_create(out_dir, str(pool.path), pool.model_id, pool.classnames,
                                    config={"loop": RunDir(out_dir).loop.name, "seed": seed},
                                    pool_checksum=pool.sample_id_checksum)
    link_pool(state, pool)
    run = state.dir
    base = base_posterior(run, pool, posterior, fit_domains=config.posterior_domains,
                          split=config.posterior_split, progress=progress, log=log)
    finetune = replace(config.finetune, seed=seed)
    select = replace(config.select, seed=seed)
    base_name, targeted = select.resolve(has_target=select.target_domain is not None)
    spec = STRATEGIES[base_name]
    rows = _metric_rows(out_dir)
    target_rows = pool.indices(domain=config.target_domain, split=select.target_split)

    def evaluate(head, post) -> dict:
        return evaluate_model(pool, head, post, domain=config.target_domain,
                              split=config.test_split, predictive=config.predictive,
                              seed=seed)

    if not rows:  # round 0: the zero-shot model and the base posterior
        t0 = time.perf_counter()
        row = {"round": 0, "n_labels": 0, "n_new": 0, **evaluate(pool.head, base)}
        rows.append(_finish(row, select.strategy, targeted, seed, 0.0, 0.0,
                            time.perf_counter() - t0))
        _write_metrics(out_dir, rows)
    for r in range(len(rows), config.rounds + 1):
        start = time.perf_counter()
        failure_file = run.failure(r - 1)
        if state.round < r:  # this round's selection was not finished before
            head = run.load_head(pool)
            post = load_posterior(run.posterior, pool) if spec.bayesian else None
            failure_prob = None
            if spec.failure is not None:
                lab_rows, labels = labelled_rows(pool, state)
                failure_prob, source = failure_probabilities(
                    pool, head, lab_rows, labels, config.vilu, config.vilu_min_labels,
                    device=config.finetune.device)
                atomic_write_json(failure_file, {"source": source})
            select_round(pool, state, select, posterior=post, head=head,
                         failure_prob=failure_prob, progress=progress)
        t_select = time.perf_counter() - start
        source = (json.loads(failure_file.read_text())["source"] if failure_file.exists()
                  else None)
        answer_queue(pool, state, r - 1)
        batch = batch_stats(pool, state, r - 1, config.target_domain)
        adapted = adapt_run(pool, state, finetune=finetune, refit_config=config.refit,
                            base=base, val_rows=val_rows, progress=progress)
        adapted.head.save(run.round_head(r - 1))
        t_eval = time.perf_counter()
        row = {"round": r, "n_labels": adapted.n_labels,
               "n_new": adapted.n_labels - rows[-1]["n_labels"],
               **evaluate(adapted.head, adapted.posterior), **batch,
               **posterior_stats(pool, adapted.posterior, target_rows),
               "failure_source": source, "best_epoch": adapted.finetune.best_epoch}
        rows.append(_finish(row, select.strategy, targeted, seed, t_select, adapted.seconds,
                            time.perf_counter() - t_eval, time.perf_counter() - start))
        _write_metrics(out_dir, rows)
        log(f"round {r}/{config.rounds}: {adapted.n_labels} labels, accuracy "
            f"{row['accuracy']:.4f}, NLL {row['nll']:.4f}, ECE {row['ece']:.4f}")
        if on_round is not None:
            on_round(rows[-1])
    return pd.DataFrame(rows)


def batch_stats(pool, state: RunState, round_index: int, target_domain: str | None) -> dict:
    """What round ``round_index``'s queue held (see run_loop): ``target_share``,
    ``n_classes_new`` and ``batch_similarity``, the mean cosine similarity of its distinct
    pairs under the pool's (zero-shot) head — one fixed geometry for every round and
    strategy (NaN for fewer than 2 items)."""
    queued = pd.read_parquet(state.dir.queue(round_index),
                             columns=["sample_id"])["sample_id"]
    items = pool.items.set_index("sample_id").loc[queued]
    share = (float((items["domain"] == target_domain).mean()) if target_domain is not None
             else float("nan"))
    labels = items["label"].to_numpy()
    rows = np.flatnonzero(pool.items["sample_id"].isin(queued).to_numpy())
    emb = torch.nn.functional.normalize(pool.image_embeddings(rows), dim=1)
    n = len(rows)
    similarity = (float(((emb @ emb.T).sum() - n) / (n * (n - 1))) if n > 1
                  else float("nan"))
    return {"target_share": share, "n_classes_new": int(len(np.unique(labels[labels >= 0]))),
            "batch_similarity": similarity}


def posterior_stats(pool, posterior: BayesVLMPosterior | None, rows: np.ndarray) -> dict:
    """``calibration_tau`` (the temperature the refit chose, NaN when not calibrated) and
    ``cv_median``, the median over the pool ``rows`` (the target's images) of ``c·v``: how
    much one label shrinks an image's embedding variance (MATH.md §6; tempering leaves it
    unchanged). Empty without a posterior."""
    if posterior is None:
        return {}
    tau = posterior.data_description.get("calibration", {}).get("tau", float("nan"))
    act, res = pool.rows(rows)
    text = pool.text_activations
    post = posterior.image
    gamma = curvature_scale(posterior, text, act, res)
    _, v = post.embedding_moments(torch.from_numpy(act).to(post.W_map))
    cv = post.pseudo_count * gamma * v.double()
    return {"calibration_tau": float(tau), "cv_median": float(cv.median())}


def _finish(row: dict, strategy: str, targeted: bool, seed: int, t_select: float,
            t_finetune: float, t_eval: float, total: float | None = None) -> dict:
    timing = {"select_seconds": t_select, "finetune_seconds": t_finetune,
              "eval_seconds": t_eval, "seconds": t_eval if total is None else total}
    return {**row, "strategy": strategy, "targeted": targeted, "seed": seed,
            **{k: round(v, 3) for k, v in timing.items()}}
