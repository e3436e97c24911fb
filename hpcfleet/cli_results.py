"""`hpcfleet results` and `hpcfleet run fill`: an evaluation matrix's results, the cells
missing from it, and submitting exactly those again."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet import display
from hpcfleet.common import AsOption, acting_partner, open_store, settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from registry.records import JobRecord, RunRecord
    from registry.store import Store
    from registry.stored_result import StoredResult


class ResultFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def results(
    run_id: str,
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    format: Annotated[
        ResultFormat, typer.Option("--format", help="table, csv or json.")
    ] = ResultFormat.table,
    missing: Annotated[
        bool, typer.Option("--missing", help="List the cells that have no result instead.")
    ] = False,
) -> None:
    """One row per (checkpoint, cell, metric) of a run's results, or its missing cells."""
    from flows import results as shown
    from registry.errors import DocumentError
    from registry.results import read_results

    store = open_store()
    run = store.get_run(run_id)
    if stage is not None and stage not in {s.name for s in run.spec.stages}:
        raise DocumentError(f"run {run_id} has no stage {stage!r}", field="--stage")
    stored = read_results(store, run_id, stage)
    if missing:
        cells = shown.missing_cells(run.spec, store.jobs(run_id), stored, stage)
        columns, rows = shown.missing_rows(cells)
    else:
        columns = shown.result_columns(run.spec, stored)
        rows = shown.result_rows(columns, stored)
    if format is ResultFormat.csv:
        sys.stdout.write(shown.render_csv(columns, rows))
    elif format is ResultFormat.json:
        sys.stdout.write(shown.render_json(columns, rows) if not missing else _json(columns, rows))
    else:
        _print_table(columns, rows)


def _json(columns: list[str], rows: list[list[str]]) -> str:
    import json

    return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=1) + "\n"


def _print_table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    display.out.print(table)


def cell_counts(store: Store, run: RunRecord) -> list[dict[str, object]]:
    """Per array stage: cells, how many have a result, and why the others have none."""
    from registry.results import read_results

    if not any(stage.array for stage in run.spec.stages):
        return []
    return counted_cells(run, store.jobs(run.run_id), read_results(store, run.run_id))


def counted_cells(
    run: RunRecord, jobs: Sequence[JobRecord], results: Sequence[StoredResult]
) -> list[dict[str, object]]:
    """`cell_counts` of jobs and results read already."""
    from flows.results import cell_counts as count

    if not any(stage.array for stage in run.spec.stages):
        return []
    return [
        {
            "stage": c.stage,
            "cells": c.total,
            "done": c.total - c.missing,
            "missing": c.missing,
            "failed": c.failed,
            "running": c.running,
            "not_run": c.not_run,
            "text": f"{c.stage}: {c.text()}",
        }
        for c in count(run.spec, jobs, results)
    ]


def cell_count_lines(store: Store, run: RunRecord) -> list[str]:
    """`evaluate: 312/320 cells, 8 missing (5 failed, 3 not run)` per array stage."""
    return [str(count["text"]) for count in cell_counts(store, run)]


def cell_count_lines_of(
    run: RunRecord, jobs: Sequence[JobRecord], results: Sequence[StoredResult]
) -> list[str]:
    """`cell_count_lines` of jobs and results read already."""
    return [str(count["text"]) for count in counted_cells(run, jobs, results)]


def fill(
    run_id: str,
    wait: Annotated[
        bool, typer.Option("--wait", help="Stay until the run ends; exit 1 if it fails.")
    ] = False,
    as_partner: AsOption = None,
) -> None:
    """Resubmit exactly the cells without a result (new attempts, one array per site)."""
    from flows.engine import EngineConfig
    from flows.fill import fill_run
    from hpcfleet import cli_runs, cli_server
    from registry import access
    from registry.states import RunState

    store = open_store()
    actor = acting_partner(store, as_partner)
    run = store.get_run(run_id)
    access.check_run_control(actor, run.partner, run_id, "fill")
    config = settings()
    engine = EngineConfig(config.store_url, config.home, config.tracking_uri, config.artifact_root)
    plan = fill_run(engine, run_id)
    for why in plan.blocked:
        display.err.print(f"[yellow]not filled:[/] {why}")
    if not plan.tasks:
        running = f"; {plan.running} cell(s) are running" if plan.running else ""
        display.err.print(f"run {run_id}: nothing to fill{running}")
        return
    per_stage = ", ".join(f"{name} {len(tasks)}" for name, tasks in plan.tasks.items())
    display.err.print(f"run {run_id}: submitted {plan.cells} missing cell(s) ({per_stage})")
    if cli_server.control_plane_enabled():
        cli_server.resume_on_control_plane(store, store.get_run(run_id), force=False)
        if wait:
            cli_runs.watch(run_id)
        return
    if not wait:
        log = cli_runs._spawn_orchestrator(run_id, actor)
        display.err.print(f"following them in the background (log: {log})")
        return
    final = cli_runs.execute(run_id)
    cli_runs.print_summary(store, final)
    if final.state is not RunState.COMPLETED:
        raise typer.Exit(1)
