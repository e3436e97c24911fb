"""The Prefect deployment of `cross_site_run` that a shared control plane serves.

`deploy` creates (or updates) a `process` work pool and the deployment
`cross-site-run/<name>` in it. Whoever can reach Prefect's API can create flow runs of
it, so what such a caller sets decides nothing but which stored run to drive:

- the flow takes only the run id (and `force`); the registry URL, the home and MLflow
  come from the worker's own environment (`flows.cross_site.orchestrator_config`);
- the work pool's base job template pins the command, the working directory and the
  environment of flow runs (`pinned_job_template`), so `job_variables` of a deployment
  or flow run cannot change what the worker executes; ones it does not know are refused.

Flow runs are started by an explicit command so that they stay in the worker's process
group: stopping (or killing) the worker stops its orchestrators, whose jobs keep running
on the sites; `recover_orphaned_runs`, called when the worker starts, resubmits every
run whose orchestrator is gone, and the resumed flow reattaches to the jobs instead of
submitting them again.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from flows.control.liveness import orchestrator_alive
from registry.errors import HpcfleetError
from registry.states import RunState
from registry.store import Store

log = logging.getLogger(__name__)

FLOW_NAME = "cross-site-run"  # the name of the flow in flows.cross_site
ENTRYPOINT = "flows.cross_site.cross_site_run"
DEFAULT_POOL = "hpcfleet"
DEFAULT_DEPLOYMENT = "hpcfleet"
CODE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding `flows`


class ControlPlaneError(HpcfleetError):
    """Prefect (the control plane's API) refused or could not be reached."""


def full_name(deployment: str = DEFAULT_DEPLOYMENT) -> str:
    return f"{FLOW_NAME}/{deployment}"


def flow_run_command(python: str = sys.executable) -> str:
    """Run flows with this interpreter, in the worker's process group (see the module
    docstring)."""
    return shlex.join([python, "-m", "prefect.engine"])


# What a deployment or flow run may still set: how the worker names and labels a flow
# run's process and whether it streams its output. Nothing that decides what runs.
CALLER_VARIABLES = ("name", "labels", "stream_output")


def pinned_job_template(python: str = sys.executable) -> dict[str, Any]:
    """Prefect's `process` base job template with the command and the working directory
    (the directory holding the code) written in, no environment of its own (flow runs
    inherit the worker's), and none of these among the variables callers set.

    `additionalProperties: false` makes Prefect's API refuse (422) any other job
    variable, e.g. `command` or `env`, of a deployment or flow run.
    """
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    configuration = template["job_configuration"]
    configuration.update(command=flow_run_command(python), working_dir=str(CODE_ROOT))
    # Not `env: {}`: Prefect's worker merges a job variable `env` into a dict written
    # here. Without the key, the flow run's environment is the worker's own.
    del configuration["env"]
    variables = template["variables"]
    variables["properties"] = {
        name: schema for name, schema in variables["properties"].items() if name in CALLER_VARIABLES
    }
    variables["required"] = [
        name for name in variables.get("required", []) if name in CALLER_VARIABLES
    ]
    variables["additionalProperties"] = False
    return template


@contextmanager
def _prefect_errors(action: str) -> Iterator[None]:
    from prefect.exceptions import ObjectNotFound

    try:
        yield
    except ObjectNotFound as exc:
        raise ControlPlaneError(
            f"cannot {action}: Prefect at {_api_url()} does not know it (is the deployment "
            "there? 'hpcfleet server up' on the control plane creates it)"
        ) from exc
    except HpcfleetError:
        raise
    except Exception as exc:
        raise ControlPlaneError(
            f"cannot {action}: Prefect at {_api_url()}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            transient=True,
        ) from exc


def _api_url() -> str:
    return os.environ.get("PREFECT_API_URL", "(PREFECT_API_URL unset)")


def ensure_work_pool(pool: str = DEFAULT_POOL, *, python: str = sys.executable) -> None:
    """Create the `process` work pool with `pinned_job_template`, or pin the template of
    the pool already there (it may come from an older hpcfleet or from anyone)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    template = pinned_job_template(python)
    pool_spec = WorkPoolCreate(
        name=pool,
        type="process",
        base_job_template=template,
        description="hpcfleet: orchestrators of cross-site runs",
    )
    with _prefect_errors(f"create work pool {pool!r}"), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(pool_spec)
        except ObjectAlreadyExists:
            client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))


def deploy(
    *,
    pool: str = DEFAULT_POOL,
    name: str = DEFAULT_DEPLOYMENT,
    python: str = sys.executable,
) -> str:
    """Create or update the deployment of `cross_site_run`; returns its id.

    It has no default parameters and no job variables: the worker knows where things
    are, and the work pool's template says how flow runs start.
    """
    from prefect.deployments.runner import RunnerDeployment
    from prefect.types.entrypoint import EntrypointType

    from flows.cross_site import cross_site_run

    ensure_work_pool(pool, python=python)
    deployment = RunnerDeployment.from_flow(
        cross_site_run,
        name=name,
        work_pool_name=pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="A cross-site run of hpcfleet, launched with 'hpcfleet run launch'.",
        tags=["hpcfleet"],
    )
    with _prefect_errors(f"deploy {full_name(name)!r}"):
        return str(deployment.apply())


def submit_run(
    run_id: str,
    *,
    force: bool = False,
    deployment: str = DEFAULT_DEPLOYMENT,
    idempotency_key: str | None = None,
) -> str:
    """Create a flow run of the deployment for stored run `run_id`; returns its id at once.

    Flow runs with the same `idempotency_key` are one and the same flow run.
    """
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with _prefect_errors(f"submit run {run_id}"):
        flow_run = run_deployment(
            full_name(deployment),
            parameters={"run_id": run_id, "force": force},
            timeout=0,
            as_subflow=False,
            flow_run_name=run_id,
            idempotency_key=idempotency_key,
            tags=["hpcfleet"],
        )
    assert isinstance(flow_run, FlowRun)  # called from sync code: not a coroutine
    return str(flow_run.id)


@dataclass(frozen=True)
class Recovery:
    """A run whose orchestrator was gone, and the flow run that now resumes it."""

    run_id: str
    dead_orchestrator: str | None
    flow_run_id: str


def recover_orphaned_runs(
    store: Store, *, deployment: str = DEFAULT_DEPLOYMENT, host: str | None = None
) -> list[Recovery]:
    """Resubmit every RUNNING run whose orchestrator is gone (see `orchestrator_alive`).

    Called when the worker starts. The resumed flow run claims the run with force and
    reattaches to its jobs. The idempotency key names the dead orchestrator, so that a
    worker restarting twice before the resume begins does not resume the run twice.
    """
    recovered = []
    for run in store.list_runs():
        if run.state is not RunState.RUNNING or orchestrator_alive(run, host=host):
            continue
        key = f"hpcfleet-resume:{run.run_id}:{run.orchestrator}:{run.heartbeat}"
        flow_run_id = submit_run(run.run_id, force=True, deployment=deployment, idempotency_key=key)
        if run.prefect_flow_run_id and run.prefect_flow_run_id != flow_run_id:
            _mark_crashed(
                run.prefect_flow_run_id,
                f"its orchestrator {run.orchestrator} died; "
                f"run {run.run_id} resumes in flow run {flow_run_id}",
            )
        log.info(
            "run %s: orchestrator %s is gone; resuming it in flow run %s",
            run.run_id,
            run.orchestrator,
            flow_run_id,
        )
        recovered.append(Recovery(run.run_id, run.orchestrator, flow_run_id))
    return recovered


def _mark_crashed(flow_run_id: str, message: str) -> None:
    """Best effort: the dead flow run would otherwise show RUNNING in Prefect forever."""
    from prefect import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
            if state is None or not state.is_final():
                client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
    except Exception as exc:
        log.warning("could not mark flow run %s crashed: %s", flow_run_id, exc)


def flow_run_waiting(flow_run_id: str) -> bool:
    """Whether the flow run is still queued or starting (scheduled, pending, running)."""
    from prefect import get_client
    from prefect.client.schemas.objects import StateType

    with _prefect_errors(f"read flow run {flow_run_id}"), get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state is not None and state.type in (
        StateType.SCHEDULED,
        StateType.PENDING,
        StateType.RUNNING,
    )
