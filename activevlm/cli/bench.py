"""``activevlm bench CONFIG`` (run a benchmark grid) and ``activevlm plot RESULTS``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def bench(
    config: Path = typer.Argument(..., help="Benchmark YAML (see benchmarks/configs/)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: "
                                    "benchmarks/results/<config name>)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds instead of "
                                     "the config's."),
    strategies: str | None = typer.Option(None, "--strategies", help="Comma-separated names: "
                                          "run only these of the config's strategies."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw curves and summary.md."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run (or resume) every (dataset, target, strategy, seed) loop; write results.parquet."""
    from activevlm.bench import plot_results, run_grid
    from activevlm.cli.loop import parse_seeds

    out = out if out is not None else Path("benchmarks/results") / config.stem
    path = run_grid(config, out, progress=progress, log=console.print,
                    seeds=None if seeds is None else parse_seeds(seeds),
                    strategies=None if strategies is None else
                    [s.strip() for s in strategies.split(",") if s.strip()])
    if plot:
        for name, p in plot_results(path, out).items():
            console.print(f"  {name:28s} {p}")


def plot(
    results: Path = typer.Argument(..., help="results.parquet written by `activevlm bench`, or "
                                   "the --out folder (or a metrics.jsonl) of `activevlm loop`."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the PNGs and summary.md "
                                    "(default: next to RESULTS)."),
) -> None:
    """Accuracy/ECE-vs-labels curves (mean ± se over seeds) and a Markdown summary."""
    from activevlm.bench import plot_results
    from activevlm.bench.plot import load_results

    try:
        table = load_results(results)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    default = results if results.is_dir() else results.parent
    for name, p in plot_results(table, out or default).items():
        console.print(f"  {name:28s} {p}")
