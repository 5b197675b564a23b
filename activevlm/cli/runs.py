"""``activevlm labels import`` and ``activevlm status``: the human side of a run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from activevlm.cli.pools import DEFAULT_RUN, RUN_OPTION_HELP
from activevlm.runs import RunState, import_labels
from activevlm.runs.pool_link import open_run_pool

console = Console()
labels_app = typer.Typer(help="Bring labels back into a run.", no_args_is_help=True)


@labels_app.command("import")
def labels_import(
    file: Path = typer.Argument(..., help="CSV (sample_id,label[,skipped]), or a Label Studio "
                                "export: JSON, JSON-MIN or CSV."),
    run: Path = typer.Option(DEFAULT_RUN, "--run", help=RUN_OPTION_HELP),
    pool: Path | None = typer.Option(None, "--pool", help="The run's pool at a new location "
                                     "(re-points the run; checked by model id and sample ids)."),
) -> None:
    """Validate FILE completely, then record its labels in the run (atomically).

    Several annotations of one item: the majority class wins, a tie is refused (listing the
    ids); an item whose annotations were all cancelled (Skip) is never queued again; an
    unannotated item stays queued.
    """
    state = RunState.load(run)
    pool = open_run_pool(state, pool)
    report = import_labels(state, file, set(pool.items["sample_id"]))
    console.print(
        f"[green]{report.new} new[/], {report.unchanged} unchanged, {report.changed} relabelled, "
        f"{len(report.skipped)} skipped; run {run} now has {len(state.labels)} labels "
        f"and {len(state.queued)} items still queued."
    )
    if report.disagreements:
        shown = "; ".join(f"{sid} ({', '.join(f'{c}: {n}' for c, n in votes.items())})"
                          for sid, votes in list(report.disagreements.items())[:20])
        console.print(f"[yellow]{len(report.disagreements)} disagreement(s) resolved by "
                      f"majority:[/] {shown}")


def status(
    run: Path = typer.Option(DEFAULT_RUN, "--run", help=RUN_OPTION_HELP),
    pool: Path | None = typer.Option(None, "--pool", help="The run's pool at a new location "
                                     "(re-points the run; checked by model id and sample ids)."),
) -> None:
    """Show rounds, labels and the pending queue of a run."""
    state = RunState.load(run)
    if pool is not None:
        open_run_pool(state, pool)
    console.print(f"run [bold]{run}[/]  pool {state.pool}  model {state.model_id}")
    table = Table("round", "strategy", "budget", "selected", "seed", "queue")
    for i, r in enumerate(state.rounds):
        table.add_row(str(i), str(r.get("strategy")), str(r.get("budget")),
                      str(r.get("selected")), str(r.get("seed")), str(state.round_dir(i)))
    console.print(table)
    per_class = {}
    for y in state.labels.values():
        per_class[state.classnames[y]] = per_class.get(state.classnames[y], 0) + 1
    console.print(f"labels: {len(state.labels)} over {len(per_class)} classes; "
                  f"queued (awaiting labels): {len(state.queued)}; skipped: {len(state.ignored)}")
