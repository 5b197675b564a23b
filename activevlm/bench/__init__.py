"""Benchmark grids of simulated active-learning loops, their curves and summary tables."""

from activevlm.bench.grid import load_grid_config, resolve_pool, run_grid
from activevlm.bench.plot import plot_results, summary_table

__all__ = ["load_grid_config", "plot_results", "resolve_pool", "run_grid", "summary_table"]
