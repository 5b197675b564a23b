"""``RunDir``: every path of a run directory, and the one resolver for its posteriors.

Layout::

    RUN/state.json             labelled / queued / skipped items, one record per round
    RUN/head.{safetensors,json} the fine-tuned projection head (absent before fine-tuning)
    RUN/posterior/             the posterior the next round selects with
    RUN/posterior_base/        the posterior before any fine-tuning (every refit starts here)
    RUN/index/                 FAISS index of the pool's image embeddings under the run's head
    RUN/loop.json              simulated loops: config and seed
    RUN/metrics.jsonl          simulated loops: one row per finished round
    RUN/round_NNN/             queue.{parquet,csv,labelstudio.json}, scores.parquet,
                               oracle_labels.csv, head.*, failure.json

Derived caches (the index) live in the run, never in the pool, which may be read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from activevlm.bayes.from_pool import fit_pool_posterior
from activevlm.bayes.posterior import BayesVLMPosterior, PosteriorError, posterior_complete
from activevlm.models.head import ProjectionHead
from activevlm.runs.errors import RunError
from activevlm.runs.lock import writes_run
from activevlm.utils.io import atomic_replace_dir, recover_dir

POSTERIOR_META = "posterior.json"


@dataclass(frozen=True)
class RunDir:
    """The files of the run at ``path``, resolved (``..``, symlinks) so that every check and
    write sees the same folder; nothing is created until written."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).resolve())

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def head(self) -> Path:
        """Stem of ``head.safetensors`` / ``head.json``."""
        return self.path / "head"

    @property
    def posterior(self) -> Path:
        return self.path / "posterior"

    @property
    def base_posterior(self) -> Path:
        return self.path / "posterior_base"

    @property
    def index(self) -> Path:
        return self.path / "index"

    @property
    def loop(self) -> Path:
        return self.path / "loop.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def round(self, index: int) -> Path:
        return self.path / f"round_{index:03d}"

    def queue(self, index: int, kind: str = "parquet") -> Path:
        """Round ``index``'s queue file: kind "parquet", "csv" or "labelstudio"."""
        name = {"parquet": "queue.parquet", "csv": "queue.csv",
                "labelstudio": "queue.labelstudio.json"}[kind]
        return self.round(index) / name

    def scores(self, index: int) -> Path:
        return self.round(index) / "scores.parquet"

    def oracle_labels(self, index: int) -> Path:
        return self.round(index) / "oracle_labels.csv"

    def round_head(self, index: int) -> Path:
        return self.round(index) / "head"

    def failure(self, index: int) -> Path:
        return self.round(index) / "failure.json"

    def load_head(self, pool=None) -> ProjectionHead | None:
        """The run's fine-tuned head, or ``pool.head`` (None without a pool) before any; a
        head whose sizes differ from the pool's is refused naming the file and the sizes."""
        if not self.head.with_suffix(".json").exists():
            return None if pool is None else pool.head
        head = ProjectionHead.load(self.head)
        if pool is not None:
            mine = (head.image_dim, head.text_dim, head.embed_dim)
            want = (pool.head.image_dim, pool.head.text_dim, pool.head.embed_dim)
            if mine != want:
                raise RunError(
                    f"{self.head}.safetensors: the run's fine-tuned head maps image/text "
                    f"activations of {mine[0]}/{mine[1]} dims to {mine[2]}-dim embeddings, "
                    f"but pool {pool.path} has {want[0]}/{want[1]} and {want[2]}; it belongs "
                    "to another pool or model: move it away (or run `activevlm finetune` "
                    "again) to continue")
        return head

    def has_posterior(self, base: bool = False) -> bool:
        return ((self.base_posterior if base else self.posterior) / POSTERIOR_META).exists()


def save_posterior(posterior: BayesVLMPosterior, folder: str | Path) -> None:
    """Write ``posterior`` to ``folder`` as a whole: into a sibling folder first, then swapped
    in (:func:`activevlm.utils.io.atomic_replace_dir`), so a crash never leaves a mix of two
    posteriors; a kill between the two renames is completed by :func:`load_posterior`."""
    atomic_replace_dir(folder, posterior.save)


def load_posterior(folder: str | Path, pool) -> BayesVLMPosterior:
    """The posterior in ``folder``, checked to be for ``pool``'s model (after completing a
    swap of ``folder`` that a kill interrupted)."""
    recover_dir(folder, posterior_complete)
    post = BayesVLMPosterior.load(folder)
    if post.model_id != pool.model_id:
        raise PosteriorError(f"posterior {folder} is for model {post.model_id!r}, the pool "
                         f"{pool.path} for {pool.model_id!r}")
    return post


def resolve_posterior(folder: str | Path, pool, given: BayesVLMPosterior | str | Path | None
                      = None, *, fit_domains=None, split: str | None = "train",
                      progress: bool = True, log: Callable = print) -> BayesVLMPosterior:
    """The posterior cached in ``folder``; on first need ``given`` (an object or a folder) or
    one fitted on ``pool`` (``split``/``fit_domains``), saved to ``folder``.

    The one place that decides where a base posterior comes from: a run's
    ``posterior_base``, a benchmark dataset's shared posterior.
    """
    folder = Path(folder)
    recover_dir(folder, posterior_complete)  # a kill between the two renames of a swap
    if (folder / POSTERIOR_META).exists():
        return load_posterior(folder, pool)
    if isinstance(given, BayesVLMPosterior):
        post = given
    elif given is not None:
        post = load_posterior(given, pool)
    else:
        log(f"fitting the posterior on {pool.path} (split={split}, domains={fit_domains}) ...")
        post = fit_pool_posterior(pool, split=split, domain=fit_domains, progress=progress)
    save_posterior(post, folder)
    return post


@writes_run("run")  # one writer per run
def base_posterior(run: RunDir, pool, given: BayesVLMPosterior | str | Path | None = None,
                   **fit_options) -> BayesVLMPosterior:
    """The run's posterior before any fine-tuning, ``RUN/posterior_base`` (on first need from
    ``given`` or a fit, see :func:`resolve_posterior`); it also seeds ``RUN/posterior``.
    Holds the run's lock; staged folders of killed writes are deleted."""
    for folder in (run.base_posterior, run.posterior):
        recover_dir(folder, posterior_complete, cleanup=True)
    base = resolve_posterior(run.base_posterior, pool, given, **fit_options)
    if not run.has_posterior():
        save_posterior(base, run.posterior)
    return base


def run_posterior(run: RunDir, pool, given: BayesVLMPosterior | str | Path | None = None,
                  **fit_options) -> BayesVLMPosterior:
    """The posterior a run selects with: ``RUN/posterior`` (refitted after each
    fine-tuning), else the :func:`base_posterior`."""
    recover_dir(run.posterior, posterior_complete)  # a kill between the renames of a swap
    if run.has_posterior():
        return load_posterior(run.posterior, pool)
    return base_posterior(run, pool, given, **fit_options)
