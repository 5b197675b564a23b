"""``run_grid``: a benchmark grid of simulated loops (datasets x targets x strategies x seeds)
written to one Parquet table.

Config (a dict or a YAML file)::

    name: demo
    seeds: [0, 1, 2]
    strategies:                    # a strategy name, or a named variant with select options
      - random-untargeted
      - random-targeted
      - epig                       # no suffix: targeted when there is a target, as `select`
      - {name: epig-balanced, strategy: epig, select: {batch: {class_balanced: true}}}
    loop: {rounds: 4, select: {budget: 25, n_draws: 50}}   # LoopConfig fields, all cells
    datasets:
      - name: demo
        pool: demo                 # "demo" or a pool directory ($VARIABLES expanded)
        per_class: 40              # demo only: images per class and domain
        targets: [sketch, clipart] # target domains (null: the whole pool is the target)
        posterior: null            # optional posterior folder (e.g. imported BayesVLM
                                   # Hessians); default: fitted on the pool
        loop: {}                   # optional per-dataset LoopConfig overrides

A variant's ``select`` options override the loop's for its cells only; its ``name`` is its
``strategy`` in the results and its folder. Each cell is a :func:`activevlm.loop.run_loop`
directory under ``out/runs/<dataset>/<target>/<strategy>/seed<k>``, so an interrupted grid
resumes where it stopped; the base posterior is fitted once per dataset
(``out/posteriors/<dataset>``) and shared by its cells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from activevlm.demo.pool import demo_pool
from activevlm.demo.world import DEFAULT_PER_CLASS
from activevlm.loop import LoopConfig, run_loop
from activevlm.pool import open_pool
from activevlm.runs import DEMO_TARGET_DOMAIN, default_fit_domains, resolve_posterior
from activevlm.utils.constraints import deep_merge
from activevlm.utils.errors import ConfigError
from activevlm.utils.io import atomic_write_parquet
from activevlm.utils.paths import safe_name

RESULTS_FILE = "results.parquet"
GRID_KEYS = {"name", "seeds", "strategies", "loop", "datasets"}
DATASET_KEYS = {"name", "pool", "per_class", "targets", "loop", "posterior"}
KEY_COLUMNS = ["dataset", "target", "strategy", "targeted", "seed", "round"]
VARIANT_KEYS = {"name", "strategy", "select"}


def resolve_pool(spec: str, per_class: int | None = None, progress: bool = True):
    """``(pool, default posterior domains, default target domain)`` for ``"demo"`` or a pool
    directory (``$VAR`` and ``~`` expanded; an unset variable is an error naming it)."""
    if spec == "demo":
        pool = demo_pool(n_per_class=per_class or DEFAULT_PER_CLASS, progress=progress)
        return pool, default_fit_domains(pool), DEMO_TARGET_DOMAIN
    if per_class is not None:
        raise ValueError(f"per_class applies to the demo pool only, not {spec!r}")
    path = os.path.expanduser(os.path.expandvars(spec))
    if "$" in path:
        raise ValueError(f"pool path {spec!r}: environment variable not set (see "
                         "benchmarks/README.md)")
    pool = open_pool(path)
    return pool, default_fit_domains(pool), None


def load_grid_config(config: dict | str | Path) -> dict:
    """The grid config as a dict (from a YAML file if a path), with its keys checked; an
    error in a file's values names the file."""
    if isinstance(config, dict):
        return check_grid_config(config)
    path = Path(config).resolve()
    if not path.exists():
        raise FileNotFoundError(f"benchmark config not found: {path}")
    try:
        return check_grid_config(read_grid_yaml(path))
    except ValueError as e:
        message = str(e)
        if not message.startswith(f"benchmark config {path}"):
            message = (message.replace("benchmark config:", f"benchmark config {path}:", 1)
                       if message.startswith("benchmark config:")
                       else f"benchmark config {path}: {message}")
        raise ConfigError(message) from e


def check_grid_config(config: dict) -> dict:
    """``config`` after checking its keys and values (see :func:`load_grid_config`)."""
    unknown = sorted(set(config) - GRID_KEYS)
    if unknown:
        raise ValueError(f"benchmark config: unknown key(s) {unknown}; known: "
                         f"{sorted(GRID_KEYS)}")
    for key in ("seeds", "strategies", "datasets"):
        if not config.get(key):
            raise ValueError(f"benchmark config: {key!r} must be a non-empty list")
    for i, ds in enumerate(config["datasets"]):
        if not isinstance(ds, dict):
            raise ConfigError(f"benchmark config: datasets[{i}] is {ds!r:.60}, expected a "
                              "mapping with 'name' and 'pool'")
        bad = sorted(set(ds) - DATASET_KEYS)
        if bad or "pool" not in ds or "name" not in ds:
            raise ValueError(f"benchmark config: datasets[{i}] needs 'name' and 'pool' and may "
                             f"have {sorted(DATASET_KEYS)}; unknown: {bad}")
    check_grid_values(config)
    names = [variant_of(s)[0] for s in config["strategies"]]  # fails early on a typo
    for i, ds in enumerate(config["datasets"]):  # the loop options of every dataset
        for where, value in (("loop", config.get("loop")), (f"datasets[{i}].loop",
                                                             ds.get("loop"))):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"benchmark config: {where!r} is {value!r:.60}, expected a "
                                  "mapping of loop options")
        try:
            LoopConfig.from_dict(deep_merge(config.get("loop") or {}, ds.get("loop")))
        except ValueError as e:
            raise ConfigError(f"benchmark config: loop options of datasets[{i}] "
                              f"({ds['name']!r}): {e}") from e
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"benchmark config: strategy name(s) {repeated} appear more than once")
    return config


def read_grid_yaml(path: Path) -> dict:
    """Parse a benchmark YAML file; syntax errors and a non-mapping top level are
    :class:`ConfigError` naming the file (and line)."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"benchmark config {path}:{where}: not valid YAML ({problem})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"benchmark config {path} is not a UTF-8 text file") from e
    if not isinstance(config, dict):
        raise ConfigError(f"benchmark config {path}: the top level must be a mapping with "
                          f"keys {sorted(GRID_KEYS)}, found a {type(config).__name__}")
    return config


def check_grid_values(config: dict) -> None:
    """Types of the grid's lists, and every name that becomes a folder (datasets, targets)
    being one path component."""
    for key in ("seeds", "strategies", "datasets"):
        if not isinstance(config[key], list):
            raise ConfigError(f"benchmark config: {key!r} must be a list, got "
                              f"{config[key]!r:.60}")
    bad_seeds = [s for s in config["seeds"] if not isinstance(s, int) or isinstance(s, bool)]
    if bad_seeds:
        raise ConfigError(f"benchmark config: 'seeds' must be integers, got {bad_seeds[:5]}")
    for i, ds in enumerate(config["datasets"]):
        safe_name(ds["name"], f"benchmark config: datasets[{i}].name")
        targets = ds.get("targets", [None])
        if not isinstance(targets, list):
            raise ConfigError(f"benchmark config: datasets[{i}].targets must be a list of "
                              f"domains (or null), got {targets!r:.60}")
        for target in targets:
            if target is not None:
                safe_name(target, f"benchmark config: datasets[{i}].targets entry")


def variant_of(entry: str | dict) -> tuple[str, str, dict]:
    """``(name, strategy, select overrides)`` of a ``strategies`` entry: a strategy name, or
    ``{name, strategy, select}`` (a named variant, e.g. class-balanced EPIG)."""
    if isinstance(entry, str):
        name, strategy, select = entry, entry, {}
    elif isinstance(entry, dict) and {"name", "strategy"} <= set(entry) <= VARIANT_KEYS:
        name, strategy, select = str(entry["name"]), str(entry["strategy"]), \
            dict(entry.get("select") or {})
    else:
        raise ValueError(f"benchmark config: strategy entry {entry!r} must be a strategy name "
                         f"or a mapping with 'name', 'strategy' and optional 'select'")
    LoopConfig.from_dict({"select": {**select, "strategy": strategy}})
    safe_name(name, "benchmark config: strategy name")
    return name, strategy, select


def select_cells(grid: dict, seeds: list[int] | None = None,
                 strategies: list[str] | None = None) -> dict:
    """``grid`` with other ``seeds`` and only the named ``strategies`` (None keeps them)."""
    grid = dict(grid)
    if seeds is not None:
        if not seeds:
            raise ValueError("benchmark: the list of seeds is empty")
        grid["seeds"] = list(seeds)
    if strategies is not None:
        by_name = {variant_of(e)[0]: e for e in grid["strategies"]}
        unknown = [s for s in strategies if s not in by_name]
        if unknown or not strategies:
            raise ValueError(f"benchmark: strategy name(s) {unknown} are not in the config; "
                             f"it has {list(by_name)}")
        grid["strategies"] = [by_name[s] for s in strategies]
    return grid


def run_grid(config: dict | str | Path, out: str | Path, *, progress: bool = True,
             log: Callable = print, seeds: list[int] | None = None,
             strategies: list[str] | None = None) -> Path:
    """Run (or resume) every cell of the grid; returns ``out/results.parquet``.

    ``seeds``/``strategies`` override the config's seeds and pick some of its strategies (by
    name); the table then holds only the cells asked for.

    Rows: one per (dataset, target, strategy, seed, round) with ``n_labels``, ``accuracy``,
    ``nll``, ``ece``, ``brier``, ``bayes_*``, timings and ``targeted`` (see ``run_loop``);
    ``target`` is the target domain or ``"all"``. The table is rewritten after every cell.
    """
    grid = select_cells(load_grid_config(config), seeds, strategies)
    out = Path(out).resolve()  # checks and writes see the same folder
    tables: list[pd.DataFrame] = []
    n_cells = sum(len(ds.get("targets") or [None]) for ds in grid["datasets"]) * \
        len(grid["strategies"]) * len(grid["seeds"])
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"benchmark {grid.get('name', '')}", total=n_cells)
        for ds in grid["datasets"]:
            pool, fit_domains, default_target = resolve_pool(
                str(ds["pool"]), ds.get("per_class"), progress=progress)
            loop_raw = deep_merge(grid.get("loop") or {}, ds.get("loop"))
            loop_raw.setdefault("posterior_domains", fit_domains)
            base_config = LoopConfig.from_dict(loop_raw)
            given = ds.get("posterior")
            base = resolve_posterior(
                out / "posteriors" / ds["name"], pool,
                None if given is None else os.path.expanduser(os.path.expandvars(given)),
                fit_domains=base_config.posterior_domains, split=base_config.posterior_split,
                progress=progress, log=lambda *a, **k: None)
            for target in ds.get("targets") or [default_target]:
                tname = "all" if target is None else str(target)
                for entry in grid["strategies"]:
                    name, strategy, select = variant_of(entry)
                    cfg = LoopConfig.from_dict(deep_merge(loop_raw, {"select": deep_merge(
                        select, {"strategy": strategy, "target_domain": target})}))
                    for seed in grid["seeds"]:
                        bar.update(task, description=f"{ds['name']}/{tname}/{name}/seed{seed}")
                        cell = out / "runs" / ds["name"] / tname / name / f"seed{seed}"
                        df = run_loop(pool, cfg, cell, int(seed), posterior=base,
                                      progress=False, log=lambda *a, **k: None)
                        df["strategy"] = name
                        df.insert(0, "target", tname)
                        df.insert(0, "dataset", ds["name"])
                        tables.append(df)
                        atomic_write_parquet(out / RESULTS_FILE, _results(tables))
                        bar.advance(task)
    path = out / RESULTS_FILE
    log(f"{len(tables)} cells, results in {path}")
    return path


def _results(tables: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(tables, ignore_index=True)
    df["failure_source"] = df["failure_source"].astype("string") \
        if "failure_source" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    first = [c for c in KEY_COLUMNS + ["n_labels"] if c in df]
    return df[first + [c for c in df.columns if c not in first]]
