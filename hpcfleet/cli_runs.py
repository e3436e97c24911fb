"""`hpcfleet run ...`: launch, watch, list, show, cancel and resume runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpcfleet import cli_results, cli_server, display
from hpcfleet.common import (
    AsOption,
    JsonOption,
    acting_partner,
    open_listing,
    open_store,
    partner_setting,
    settings,
)
from hpcfleet.completion import complete_runs
from registry.owner_only import private_file
from registry.redact import masked_env, redact_url, redact_urls, shows_values
from registry.states import RunState

if TYPE_CHECKING:
    from registry.listing import RunSummary
    from registry.records import JobRecord, RunRecord, StageRecord
    from registry.store import Store

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", autocompletion=complete_runs)]

run_app = typer.Typer(help="Launch and follow cross-site runs.", no_args_is_help=True)


def _loader(store: Store, run_id: str) -> Any:
    def load() -> tuple[RunRecord, list[StageRecord], list[JobRecord]]:
        return store.get_run(run_id), store.stages(run_id), store.jobs(run_id)

    return load


def _checkpoint_names(store: Store, run_id: str) -> Callable[[], dict[str, list[str]]]:
    """Per stage, the names of the checkpoints it wrote, oldest first (`run watch`)."""
    from registry.checkpoints import read_checkpoints

    def load() -> dict[str, list[str]]:
        names: dict[str, list[str]] = {}
        for checkpoint in read_checkpoints(store, run_id):
            names.setdefault(checkpoint.stage, []).append(checkpoint.name)
        return names

    return load


def execute(run_id: str, *, force: bool = False, live: bool | None = None) -> RunRecord:
    """Drive the run in this process through the Prefect flow, with live progress."""
    config = settings()
    from flows.prefect_api import start_api

    # The temporary Prefect server starts while this process imports Prefect and opens
    # MLflow's store (MLflow keeps it for the process: the run's tracker reuses it).
    api = start_api(config.home)
    from flows.cross_site import cross_site_run
    from flows.tracking import Tracker

    Tracker(config.tracking_uri, config.artifact_root)
    store = open_store()
    show = sys.stdout.isatty() if live is None else live
    stop = threading.Event()
    viewer = threading.Thread(
        target=display.watch,
        args=(_loader(store, run_id),),
        kwargs={"until": stop.is_set, "checkpoints": _checkpoint_names(store, run_id)},
        daemon=True,
    )
    if show:
        viewer.start()
    try:
        if api is not None:
            api.wait_ready()
        # The flow reads the registry, home and MLflow from this process's settings.
        cross_site_run(run_id=run_id, force=force)
    finally:
        stop.set()
        if show:
            viewer.join()
    return store.get_run(run_id)


def print_summary(store: Store, run: RunRecord) -> None:
    from flows.summary import summarize
    from flows.tracking import Tracker

    config = settings()
    children: list[Any] = []
    try:
        tracker = Tracker(config.tracking_uri, config.artifact_root)
        children = tracker.children(tracker.experiment_id(run.experiment), run.run_id)
    except Exception as exc:
        display.err.print(f"(metrics unavailable: {redact_urls(str(exc))})")
    rows = summarize(run, store.stages(run.run_id), store.jobs(run.run_id), children)
    display.out.print(display.summary_table(run, rows))
    for line in cli_results.cell_count_lines(store, run):
        display.out.print(line)


def mlflow_hint() -> str:
    """Where to look at the results; the tracking URI without its password."""
    config = settings()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return f"Results are in MLflow at {redact_url(config.tracking_uri)}"
    return (
        "See every metric and log in the MLflow UI:\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {config.tracking_uri} "
        f"--default-artifact-root {config.artifact_root} --port 5000\n"
        "  then open http://127.0.0.1:5000"
    )


@run_app.command("launch")
def launch(
    file: Path,
    wait: Annotated[
        bool, typer.Option("--wait", help="Stay until the run ends; exit 1 if it fails.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Refuse a run that could exceed a site's remaining allocation."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Check, plan and print each stage's batch script; submit nothing."
        ),
    ] = False,
    as_partner: AsOption = None,
) -> None:
    """Validate and start a run; prints its id."""
    from flows.launch import launch as launch_run

    store = open_store()
    actor = acting_partner(store, as_partner)
    if dry_run:
        from flows.dry_run import dry_run as plan_only
        from flows.dry_run import format_dry_run

        result = plan_only(store, file, actor, settings().home / "sites", strict=strict)
        for warning in result.warnings:
            display.err.print(f"[yellow]warning:[/] {warning}")
        print(format_dry_run(result, file), end="")
        return
    launched = launch_run(store, file, actor, strict=strict)
    for warning in launched.warnings:
        display.err.print(f"[yellow]warning:[/] {warning}")
    run = launched.run
    print(run.run_id, flush=True)
    if cli_server.control_plane_enabled():  # PREFECT_API_URL: the control plane's worker runs it
        cli_server.submit_to_control_plane(store, run.run_id)
        if wait:
            watch(run.run_id)
        return
    if not wait:
        log = _spawn_orchestrator(run.run_id, actor)
        display.err.print(
            f"running in the background (log: {log}); follow it with "
            f"'hpcfleet run watch {run.run_id}'"
        )
        return
    final = execute(run.run_id)
    print_summary(store, final)
    if final.state is not RunState.COMPLETED:
        raise typer.Exit(1)


def _spawn_orchestrator(run_id: str, actor: str) -> Path:
    log = private_file(settings().home / "logs" / f"{run_id}.log")
    with log.open("ab") as handle:
        subprocess.Popen(
            [sys.executable, "-m", "hpcfleet", "run", "resume", run_id, "--as", actor],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    return log


@run_app.command("watch")
def watch(run_id: RunId) -> None:
    """Live progress per stage and site until the run ends."""
    store = open_store()
    run = display.watch(_loader(store, run_id), checkpoints=_checkpoint_names(store, run_id))
    print_summary(store, run)
    if run.state is not RunState.COMPLETED:
        raise typer.Exit(1)


@run_app.command("list")
def list_runs(json: JsonOption = False) -> None:
    """All runs, oldest first."""
    with open_listing() as listing:
        runs, broken = listing.runs()
    for row in broken:
        display.err.print(f"warning: {row.warning()}", markup=False, soft_wrap=True)
    if json:
        display.print_json([_run_dict(r) for r in runs])
        return
    rows = [
        (
            run.run_id,
            run.name,
            run.partner,
            run.state.value,
            f"{run.created:%Y-%m-%d %H:%M:%S}Z",
            run.reason or "",
        )
        for run in runs
    ]
    sys.stdout.write(
        display.columns(("run", "name", "partner", "state", "created", "reason"), rows)
    )


def _run_dict(run: RunRecord | RunSummary) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "name": run.name,
        "partner": run.partner,
        "experiment": run.experiment,
        "state": run.state.value,
        "reason": run.reason,
        "created": run.created.isoformat(),
        "started": run.started.isoformat() if run.started else None,
        "ended": run.ended.isoformat() if run.ended else None,
        "mlflow_run_id": run.mlflow_run_id,
        "prefect_flow_run_id": run.prefect_flow_run_id,
    }


def stage_env(run: RunRecord, stage: str, viewer: str | None) -> dict[str, str]:
    """A stage's `env` as `viewer` may see it: values only for the run's own partner."""
    try:
        env = run.spec.stage(stage).env
    except KeyError:  # a stage record the spec does not name (none has env of its own)
        return {}
    return dict(env) if shows_values(viewer, run.partner) else masked_env(env)


@run_app.command("show")
def show(run_id: RunId, json: JsonOption = False, as_partner: AsOption = None) -> None:
    """One run: its stages, where they ran and why, and their jobs (env values only to
    the run's own partner)."""
    with open_listing() as listing:
        run = listing.run(run_id)
        stages, jobs = listing.stages(run_id), listing.jobs(run_id)
        results = listing.results(run_id)
        checkpoints = listing.checkpoints(run_id)
    from registry.residency import output_residency

    residency = output_residency(run.spec)
    viewer = as_partner or partner_setting()
    if json:
        data = _run_dict(run)
        data["stages"] = [
            {
                "name": s.name,
                "state": s.state.value,
                "site": ",".join(s.sites) or None,
                "sites": s.sites,
                "attempt": s.attempt,
                "reason": s.reason,
                "choice": s.choice,
                "residency": residency[s.name],
                "env": stage_env(run, s.name, viewer),
                "jobs": [
                    j.model_dump(mode="json", exclude={"run_id"}) for j in jobs if j.stage == s.name
                ],
                **_segments(run, s.name, jobs),
            }
            for s in stages
        ]
        data["cells"] = cli_results.counted_cells(run, jobs, results)
        data["checkpoints"] = [{**asdict(c), "found": c.found.isoformat()} for c in checkpoints]
        display.print_json(data)
        return
    names: dict[str, list[str]] = {}
    for checkpoint in checkpoints:
        names.setdefault(checkpoint.stage, []).append(checkpoint.name)
    display.out.print(display.progress_table(run, stages, jobs, names))
    for line in cli_results.cell_count_lines_of(run, jobs, results):
        display.out.print(line)
    for checkpoint in checkpoints:
        display.out.print(
            f"checkpoint {checkpoint.stage}/{checkpoint.name}: {checkpoint.path} on "
            f"{checkpoint.site}, {checkpoint.found:%Y-%m-%d %H:%M:%S}Z, "
            f"sha256 {checkpoint.sha256[:12]}",
            markup=False,
        )
    for stage in stages:
        if stage.choice:
            display.out.print(f"[bold]{stage.name}[/]: {stage.choice}")
        if stage.reason:
            display.out.print(f"  reason: {stage.reason}")
        if run.spec.stage(stage.name).chain:
            lines = display.segment_lines([j for j in jobs if j.stage == stage.name])
            display.out.print(f"[bold]{stage.name}[/] segments:", highlight=False)
            display.out.print(lines, markup=False, highlight=False, end="")
        if residency[stage.name]:
            display.out.print(f"  outputs stay within: {'; '.join(residency[stage.name])}")
    if run.reason:
        display.out.print(f"run: {run.reason}")


def _segments(run: RunRecord, stage: str, jobs: list[JobRecord]) -> dict[str, Any]:
    """`segments` of a chained stage for `run show --json` (nothing for other stages)."""
    if not run.spec.stage(stage).chain:
        return {}
    from dataclasses import asdict

    from flows.segments import segment_rows

    rows = segment_rows([j for j in jobs if j.stage == stage])
    return {
        "segments": [asdict(row) for row in rows],
        "gpu_hours": sum(row.gpu_hours for row in rows),
    }


@run_app.command("cancel")
def cancel(run_id: RunId, as_partner: AsOption = None) -> None:
    """Cancel every live job of the run on every site."""
    from flows.engine import cancel_run
    from registry import access

    store = open_store()
    actor = acting_partner(store, as_partner)
    run = store.get_run(run_id)
    access.check_run_control(actor, run.partner, run_id, "cancel")
    if run.state.is_final:
        display.err.print(f"run {run_id} already ended {run.state.value}")
        return
    done = cancel_run(store, run_id, settings().home / "sites")
    if done.orchestrator is not None:  # it sees the flag and cancels the jobs itself
        display.err.print(f"run {run_id}: cancel requested; {done.orchestrator} cancels its jobs")
        return
    display.err.print(f"run {run_id}: cancelled {done.cancelled_jobs} live job(s)")


@run_app.command("resume")
def resume(
    run_id: RunId,
    as_partner: AsOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Take over even if another orchestrator seems alive.")
    ] = False,
) -> None:
    """Reattach to a run after its orchestrator died; never submits a job twice."""
    from registry import access

    store = open_store()
    actor = acting_partner(store, as_partner)
    run = store.get_run(run_id)
    access.check_run_control(actor, run.partner, run_id, "resume")
    if run.state.is_final:
        display.err.print(f"run {run_id} already ended {run.state.value}")
        if run.state is not RunState.COMPLETED:
            raise typer.Exit(1)
        return
    if cli_server.control_plane_enabled():
        cli_server.resume_on_control_plane(store, run, force=force)
        watch(run_id)
        return
    final = execute(run_id, force=force)
    print_summary(store, final)
    if final.state is not RunState.COMPLETED:
        raise typer.Exit(1)
