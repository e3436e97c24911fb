"""`hpcfleet server up|down|status` (the shared control plane) and `hpcfleet db upgrade`;
and what `hpcfleet run` needs to launch, resume and cancel runs through it."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet import display
from hpcfleet.common import JsonOption, open_store, settings
from registry.redact import redact_url

if TYPE_CHECKING:  # the control plane's modules load SQLAlchemy: imported where used
    from flows.control import supervisor
    from flows.control.plan import ControlPlaneConfig
    from registry.records import RunRecord
    from registry.store import Store

server_app = typer.Typer(
    help="Run the consortium's control plane here: Prefect, a worker, MLflow, the dashboard.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The registry database: schema migrations.", no_args_is_help=True)

Port = Annotated[int | None, typer.Option(min=1, max=65535, show_default=False)]
STATE_STYLES = {"ready": "green", "starting": "yellow", "down": "bold red"}


def control_config() -> ControlPlaneConfig:
    """What the control plane's supervisor needs from the settings."""
    from flows.control.plan import ControlPlaneConfig

    config = settings()
    return ControlPlaneConfig(
        home=config.home,
        store_url=config.store_url,
        work_pool=config.work_pool,
        prefect_database_url=config.prefect_database_url,
        mlflow_database_url=config.mlflow_database_url,
        mlflow_artifacts=config.mlflow_artifacts,
    )


def shown_url(url: str) -> str:
    """A URL fit to print: the password masked."""
    return redact_url(url)


@server_app.command("up")
def up(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address started pieces listen on [default: 127.0.0.1].", show_default=False
        ),
    ] = None,
    prefect_port: Port = None,
    mlflow_port: Port = None,
    dashboard_port: Port = None,
    prefect_url: Annotated[
        str | None,
        typer.Option(
            help="An existing Prefect API (…/api) to use instead of starting one.",
            show_default=False,
        ),
    ] = None,
    mlflow_url: Annotated[
        str | None,
        typer.Option(
            help="An existing MLflow server to use instead of starting one.", show_default=False
        ),
    ] = None,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker", help="Run a worker here [default: yes].", show_default=False
        ),
    ] = None,
    dashboard: Annotated[
        bool | None,
        typer.Option(
            "--dashboard/--no-dashboard",
            help="Run the dashboard here [default: yes].",
            show_default=False,
        ),
    ] = None,
    prefect_ui: Annotated[
        bool | None,
        typer.Option(
            "--prefect-ui/--no-prefect-ui",
            help="Serve Prefect's own UI [default: yes].",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each piece may take to answer.")] = 180.0,
    json: JsonOption = False,
) -> None:
    """Start what is not running yet (options are remembered for the next 'up') and
    print the URLs partners point their CLI at."""
    from flows.control import supervisor
    from flows.control.plan import load_plan
    from registry import migrate

    config = settings()
    plan = load_plan(
        config.server_dir,
        host=host,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        dashboard_port=dashboard_port,
        prefect_url=prefect_url,
        mlflow_url=mlflow_url,
        worker=worker,
        dashboard=dashboard,
        prefect_ui=prefect_ui,
    )
    before, after = migrate.upgrade(config.store_url)
    was = "" if before == after else f" (was {before or 'empty'})"
    display.err.print(f"registry {shown_url(config.store_url)}: schema {after}{was}")

    def deploy_flow() -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.deployment import deploy, full_name

        with temporary_settings({PREFECT_API_URL: plan.prefect_api}):
            deploy(pool=config.work_pool, name=config.deployment)
        display.err.print(
            f"deployment {full_name(config.deployment)} in work pool {config.work_pool}"
        )

    statuses = supervisor.up(
        control_config(),
        plan,
        timeout=timeout,
        after_services=deploy_flow,
        on_ready=lambda name: display.err.print(f"{name} ready"),
    )
    _report(statuses, json)
    if not json:
        display.out.print("Partners point their CLI here:")
        display.out.print(
            f"  export PREFECT_API_URL={shown_url(plan.prefect_api)}", highlight=False
        )
        display.out.print(
            f"  export MLFLOW_TRACKING_URI={shown_url(plan.mlflow_uri)}", highlight=False
        )
        display.out.print(
            f"  export HPCFLEET_DATABASE_URL={shown_url(config.store_url)}", highlight=False
        )


@server_app.command("down")
def down() -> None:
    """Stop every piece 'server up' started on this machine."""
    from flows.control import supervisor

    stopped = supervisor.down(control_config())
    for name, record in stopped:
        display.err.print(f"stopped {name} (process group {record.pid})")
    if not stopped:
        display.err.print("nothing was running")


@server_app.command("status")
def status(json: JsonOption = False) -> None:
    """Each piece: its URL, its process, whether it answers; exit 1 if one does not."""
    from flows.control import supervisor
    from flows.control.plan import load_plan

    config = control_config()
    statuses = supervisor.status(config, load_plan(config.server_dir))
    _report(statuses, json)
    if not all(s.ready for s in statuses):
        raise typer.Exit(1)


def _report(statuses: list[supervisor.PieceStatus], json: bool) -> None:
    statuses = [replace(s, url=s.url and shown_url(s.url)) for s in statuses]
    from rich.table import Table
    from rich.text import Text

    if json:
        display.print_json([s.as_dict() for s in statuses])
        return
    table = Table()
    for column in ("piece", "url", "process", "state"):
        table.add_column(column)
    for s in statuses:
        process = "external" if s.external else (str(s.pid) if s.running else "-")
        state = "ready" if s.ready else ("starting" if s.running else "down")
        table.add_row(s.name, s.url or "-", process, Text(state, style=STATE_STYLES[state]))
    display.out.print(table)


@server_app.command("worker", hidden=True)
def worker() -> None:
    """Resume runs whose orchestrator died, then become the pool's Prefect worker."""
    from flows.control.pieces import worker_command
    from flows.deployment import recover_orphaned_runs

    config = settings()
    store = open_store()
    try:
        for found in recover_orphaned_runs(store, deployment=config.deployment):
            display.err.print(
                f"run {found.run_id}: orchestrator {found.dead_orchestrator} is "
                f"gone; resuming it in flow run {found.flow_run_id}"
            )
    finally:
        store.close()
    command = worker_command(control_config())
    sys.stdout.flush()
    sys.stderr.flush()
    # Flow runs inherit this environment (`worker_env`): the registry URL with its
    # password, never a parameter of the flow run.
    os.execv(command[0], command)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the registry database to this hpcfleet's schema (back it up first)."""
    from registry import migrate

    url = settings().store_url
    before, after = migrate.upgrade(url)
    if before == after:
        display.err.print(f"registry {shown_url(url)}: schema {after}, up to date")
    else:
        display.err.print(f"registry {shown_url(url)}: schema {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(json: JsonOption = False) -> None:
    """The registry's schema revision and the one this hpcfleet needs."""
    from registry import migrate

    url = settings().store_url
    revision = migrate.current(url)
    if json:
        display.print_json({"database": shown_url(url), "revision": revision, "head": migrate.HEAD})
        return
    display.out.print(
        f"{shown_url(url)}: {revision or 'not migrated'} (this hpcfleet: {migrate.HEAD})",
        highlight=False,
    )
    if revision != migrate.HEAD:
        raise typer.Exit(1)


# -- for `hpcfleet run` -------------------------------------------------------------
def control_plane_enabled() -> bool:
    """Runs go to the control plane's deployment when PREFECT_API_URL is set."""
    return settings().prefect_api_url is not None


def submit_to_control_plane(store: Store, run_id: str, *, force: bool = False) -> str:
    """Hand stored run `run_id` to the control plane's worker; returns the flow run id."""
    from flows.deployment import ControlPlaneError, submit_run

    settings().home.mkdir(parents=True, exist_ok=True)  # Prefect keeps its client state there
    try:
        flow_run_id = submit_run(run_id, force=force, deployment=settings().deployment)
    except ControlPlaneError as exc:
        raise ControlPlaneError(
            f"{exc} — run {run_id} is stored but not started; start it with "
            f"'hpcfleet run resume {run_id}' once the control plane answers",
            transient=exc.transient,
        ) from exc
    store.update_run(run_id, prefect_flow_run_id=flow_run_id)
    display.err.print(
        f"run {run_id}: submitted to the control plane (flow run {flow_run_id}); "
        f"follow it with 'hpcfleet run watch {run_id}'"
    )
    return flow_run_id


def resume_on_control_plane(store: Store, run: RunRecord, *, force: bool = False) -> str:
    """Resubmit a run whose orchestrator is gone; refuse while one holds or is queued."""
    from flows.control.liveness import orchestrator_alive
    from flows.deployment import flow_run_waiting
    from flows.engine import RunBusy

    if not force and orchestrator_alive(run):
        raise RunBusy(
            f"run {run.run_id} is being driven by {run.orchestrator}; use --force "
            "only if that process is gone"
        )
    if (
        not force
        and run.orchestrator is None
        and run.prefect_flow_run_id
        and (flow_run_waiting(run.prefect_flow_run_id))
    ):
        raise RunBusy(
            f"run {run.run_id} is already queued on the control plane as flow run "
            f"{run.prefect_flow_run_id}; use --force to start another"
        )
    # We decided the orchestrator is gone (maybe by its pid, before its heartbeat aged).
    return submit_to_control_plane(store, run.run_id, force=True)
