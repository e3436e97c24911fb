"""Running a stored run to the end, without Prefect: open the context, drive every stage
in DAG order (independent stages at the same time), conclude. `flows.cross_site`
wraps the same functions in a Prefect flow."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.chains import awaited_needs, chainable_stages
from flows.context import RunContext
from flows.control.liveness import HEARTBEAT_SECONDS, orchestrator_alive, orchestrator_id
from flows.crate import log_crate
from flows.launch import plans_for
from flows.metrics import MetricPoint
from flows.planning import placement_refusal, recorded_sites
from flows.stage_runner import run_stage
from flows.tracking import MLFLOW_STATUS, Tracker
from flows.watcher import WatcherPool
from registry.errors import HpcfleetError
from registry.records import JobRecord, RunRecord
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store, now
from sites.driver import DriverPool

log = logging.getLogger(__name__)

CANCEL_REASON = "cancelled on request"  # the reason of a run (and stage) cancelled by a user


class RunEnded(HpcfleetError):
    """The run is already COMPLETED, FAILED or CANCELLED."""

    exit_code = 1


class RunBusy(HpcfleetError):
    """Another live orchestrator drives this run."""

    exit_code = 1


@dataclass(frozen=True)
class EngineConfig:
    """Where the engine keeps things; the CLI or the deployment fills it from settings."""

    database_url: str
    home: Path  # default root of local sites' work dirs is home/"sites"
    tracking_uri: str
    artifact_root: str | None = None
    # The shared control plane's worker: it refuses to run jobs on its own machine.
    shared: bool = False


class LocalSiteRefused(HpcfleetError):
    """The shared control plane was asked to run jobs on a `scheduler: local` site."""

    exit_code = 2


def local_site_refusal(sites: dict[str, Site]) -> str | None:
    """Why the shared control plane does not drive a run on `sites`, or None."""
    local = sorted(name for name, site in sites.items() if site.scheduler == "local")
    if not local:
        return None
    names = ", ".join(repr(name) for name in local)
    which = f"site {names} is" if len(local) == 1 else f"sites {names} are"
    return (
        f"{which} 'scheduler: local': the shared control plane does not run "
        "jobs on its own machine; local sites are for the embedded default (run without "
        "PREFECT_API_URL)"
    )


@contextmanager
def run_context(
    config: EngineConfig, run_id: str, *, flow_run_id: str | None = None, force: bool = False
) -> Iterator[RunContext]:
    """Open everything a run needs; claim it so that no second orchestrator drives it."""
    store = Store.open(config.database_url)
    run = store.get_run(run_id)
    if run.state.is_final:
        store.close()
        raise RunEnded(f"run {run_id} already ended {run.state.value}; there is nothing to drive")
    _claim(store, run, force)
    stages = store.stages(run_id)
    plans, sites = plans_for(store, run, stages)
    refusal = local_site_refusal(sites) if config.shared else None
    if refusal is not None:  # before anything is submitted or tracked
        for stage in stages:
            if not stage.state.is_final:
                store.update_stage(
                    run_id,
                    stage.name,
                    state=RunState.FAILED,
                    reason=f"not started: {refusal}",
                    ended=now(),
                )
        store.update_run(
            run_id, state=RunState.FAILED, reason=refusal, ended=now(), orchestrator=None
        )
        store.close()
        raise LocalSiteRefused(f"run {run_id}: {refusal}")
    # What the run's jobs are submitted with: kept so that they stay reachable after
    # their site leaves the registry (see `cancel_run`).
    documents = {name: site.model_dump(mode="json") for name, site in sites.items()}
    tracker = Tracker(config.tracking_uri, config.artifact_root)
    experiment_id = tracker.experiment_id(run.experiment)
    parent = run.mlflow_run_id or _start_parent(tracker, experiment_id, run, flow_run_id)
    run = store.update_run(
        run_id,
        state=RunState.RUNNING,
        started=run.started or now(),
        mlflow_run_id=parent,
        prefect_flow_run_id=flow_run_id or run.prefect_flow_run_id,
        reason=None,
        site_documents={**run.site_documents, **documents},
    )
    if flow_run_id:
        tracker.set_tags(parent, {"prefect.flow_run_id": flow_run_id})
    drivers, watchers = DriverPool(config.home / "sites"), WatcherPool()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(store, run_id, stop), daemon=True)
    beat.start()
    with tempfile.TemporaryDirectory(prefix=f"hpcfleet-{run_id}-") as scratch:
        ctx = RunContext(
            store=store,
            run=run,
            plans=plans,
            drivers=drivers,
            watchers=watchers,
            tracker=tracker,
            experiment_id=experiment_id,
            parent_mlflow_id=parent,
            files=store.run_files(run_id),
            sites=sites,
            scratch=Path(scratch),
            flow_run_id=flow_run_id,
            chained=chainable_stages(run.spec, plans),
        )
        for stage in stages:
            if stage.state.is_final:
                ctx.note_final(stage.name)
        try:
            yield ctx
        finally:
            stop.set()
            watchers.close()
            drivers.close()
            store.update_run(run_id, orchestrator=None)
            store.close()


def _claim(store: Store, run: RunRecord, force: bool) -> None:
    me = orchestrator_id()
    if run.orchestrator != me and not force and orchestrator_alive(run):
        raise RunBusy(
            f"run {run.run_id} is being driven by {run.orchestrator} (heartbeat "
            f"{int((now() - run.heartbeat).total_seconds()) if run.heartbeat else '?'} s ago); "
            "use --force only if that process is gone"
        )
    store.update_run(run.run_id, orchestrator=me, heartbeat=now())


def _heartbeat(store: Store, run_id: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            store.update_run(run_id, heartbeat=now())
        except HpcfleetError as exc:
            log.warning("heartbeat of run %s failed: %s", run_id, exc)


def _start_parent(
    tracker: Tracker, experiment_id: str, run: RunRecord, flow_run_id: str | None
) -> str:
    tags = {
        "hpcfleet.run_id": run.run_id,
        "hpcfleet.partner": run.partner,
        "hpcfleet.run_name": run.name,
    }
    if flow_run_id:
        tags["prefect.flow_run_id"] = flow_run_id
    return tracker.start_run(
        experiment_id, f"{run.name} ({run.run_id})", tags, params=run.spec.params
    )


StageRunner = Callable[[RunContext, str], RunState]


def drive_stages(ctx: RunContext, runner: StageRunner = run_stage) -> dict[str, RunState]:
    """Run every stage once its needs are final; independent stages run concurrently."""
    spec = ctx.spec
    futures: dict[str, Future[RunState]] = {}
    awaited = awaited_needs(spec, ctx.chained)
    with ThreadPoolExecutor(max_workers=len(spec.stages), thread_name_prefix="stage") as pool:
        for name in spec.order:
            needs = [futures[n] for n in awaited[name]]
            futures[name] = pool.submit(_after, needs, runner, ctx, name)
        return {name: future.result() for name, future in futures.items()}


def _after(
    needs: list[Future[RunState]], runner: StageRunner, ctx: RunContext, name: str
) -> RunState:
    wait(needs)
    return guarded(runner, ctx, name)


def guarded(runner: StageRunner, ctx: RunContext, name: str) -> RunState:
    """Run a stage; a bug in it fails that stage (and skips its dependents), not the run.

    A stage that may not start on its planned sites any more (`placement_refusal`)
    fails without running, with the reason.
    """
    try:
        refusal = _placement_refusal(ctx, name)
        if refusal is not None:
            return _refuse(ctx, name, refusal)
        return runner(ctx, name)
    except HpcfleetError as exc:
        reason = str(exc)
    except Exception as exc:
        log.exception("stage %s of run %s crashed", name, ctx.run_id)
        reason = f"internal error: {exc.__class__.__name__}: {exc}"
    ctx.store.update_stage(ctx.run_id, name, state=RunState.FAILED, reason=reason, ended=now())
    return RunState.FAILED


def _placement_refusal(ctx: RunContext, name: str) -> str | None:
    """Why stage `name`, about to start, may not go to its planned sites, or None.

    Asked just before a stage starts, so that a site removed or unshared while the run
    was going is not used by any stage that has not started yet. A stage that started
    (sites recorded), ended, or is to be skipped or cancelled by the runner is left to it.
    """
    stages = {s.name: s for s in ctx.store.stages(ctx.run_id)}
    record = stages[name]
    if record.state.is_final or record.sites:
        return None
    needs = [stages[need].state for need in ctx.spec.stage(name).needs]
    if any(s.is_final and s is not RunState.COMPLETED for s in needs):
        return None
    if ctx.cancel_requested():
        return None
    plan = ctx.plans[name]
    if plan.refusal is not None:
        return plan.refusal
    registered = {entry.site.name: entry.site for entry in ctx.store.list_sites()}
    refusals = (placement_refusal(site, ctx.run.partner, registered) for site in plan.sites)
    return next((why for why in refusals if why is not None), None)


def _refuse(ctx: RunContext, name: str, refusal: str) -> RunState:
    log.warning("stage %s of run %s not started: %s", name, ctx.run_id, refusal)
    ctx.store.update_stage(
        ctx.run_id, name, state=RunState.FAILED, reason=f"not started: {refusal}", ended=now()
    )
    ctx.note_final(name)  # a chained stage may wait for this one
    return RunState.FAILED


def settle_accounting(ctx: RunContext) -> None:
    """Read the final accounting of the run's jobs once more, one call per site.

    A scheduler may report a job final before its accounting record is complete (sacct
    lags slurmctld by seconds), so GPU-hours seen at the end of each job can fall short.
    """
    by_site: dict[str, list[JobRecord]] = {}
    for job in ctx.store.jobs(ctx.run_id):
        if job.scheduler_id and job.state.is_final:
            by_site.setdefault(job.site, []).append(job)
    updates = []
    for site, jobs in by_site.items():
        try:
            statuses = ctx.driver(site).scheduler.status([j.scheduler_id or "" for j in jobs])
        except HpcfleetError as exc:
            log.warning("could not settle the accounting of %s: %s", site, exc)
            continue
        for job in jobs:
            status = statuses.get(job.scheduler_id or "")
            if status is not None and status.gpu_hours > job.gpu_hours:
                updates.append((job.id, {"gpu_hours": status.gpu_hours}))
    ctx.store.update_jobs(updates)


def conclude(ctx: RunContext) -> RunRecord:
    """Set the run's final state and reason from its stages; close the MLflow parent."""
    settle_accounting(ctx)
    stages = ctx.store.stages(ctx.run_id)
    failed = [s for s in stages if s.state is RunState.FAILED]
    if ctx.cancel_requested():
        state, reason = RunState.CANCELLED, CANCEL_REASON
    elif failed:
        state, reason = RunState.FAILED, f"stage {failed[0].name} failed: {failed[0].reason}"
    elif all(s.state is RunState.COMPLETED for s in stages):
        state, reason = RunState.COMPLETED, None
    else:
        unfinished = [s.name for s in stages if not s.state.is_final]
        state = RunState.FAILED
        reason = f"stages did not finish: {', '.join(unfinished)}" if unfinished else "cancelled"
    gpu_hours = sum(job.gpu_hours for job in ctx.store.jobs(ctx.run_id))
    ctx.tracker.log_metrics(ctx.parent_mlflow_id, [MetricPoint("gpu_hours", gpu_hours)])
    ctx.tracker.set_tags(ctx.parent_mlflow_id, {"hpcfleet.state": state.value})
    final = {"state": state, "reason": reason, "ended": now()}
    # The registry says the run ended only once MLflow does: whoever sees it final there
    # (a partner's `run list`, a milestone) finds the crate and a closed parent run.
    log_crate(ctx, ctx.store.get_run(ctx.run_id).model_copy(update=final))
    ctx.tracker.finish(ctx.parent_mlflow_id, MLFLOW_STATUS[state.value])
    return ctx.store.update_run(ctx.run_id, **final)


def execute_run(config: EngineConfig, run_id: str, *, force: bool = False) -> RunRecord:
    """Drive a stored run to its end in this process, without Prefect."""
    with run_context(config, run_id, force=force) as ctx:
        drive_stages(ctx)
        return conclude(ctx)


@dataclass(frozen=True)
class Cancellation:
    """What `cancel_run` did."""

    run_id: str
    orchestrator: str | None  # the live orchestrator that cancels the jobs itself
    cancelled_jobs: int  # live jobs cancelled by `cancel_run` itself


def cancel_run(store: Store, run_id: str, sites_root: Path) -> Cancellation:
    """Cancel every live job of a run that has not ended, on every site.

    Access is the caller's to check (`registry.access.check_run_control`). When a live
    orchestrator drives the run (`orchestrator_alive`), it sees the request and cancels
    its jobs itself. Otherwise the jobs are cancelled here, each on its site through the
    site document the run recorded (a site removed from the registry since still gets
    its jobs cancelled), and the run, its unfinished stages and its live jobs are
    recorded CANCELLED. `sites_root` is the default work root of local sites.
    """
    run = store.get_run(run_id)
    if run.state.is_final:
        raise RunEnded(f"run {run_id} already ended {run.state.value}")
    alive = orchestrator_alive(run)
    store.update_run(run_id, cancel_requested=True)
    if alive:
        return Cancellation(run_id, run.orchestrator, 0)
    live = [job for job in store.jobs(run_id) if not job.state.is_final]
    by_site: dict[str, set[str]] = {}
    for job in live:
        if job.scheduler_id:
            by_site.setdefault(job.site, set()).add(job.scheduler_id)
    drivers = DriverPool(sites_root)
    try:
        for site, ids in by_site.items():
            drivers.get(_site_of_jobs(store, run, site)).scheduler.cancel(sorted(ids))
    finally:
        drivers.close()
    ended = now()
    store.update_jobs([(job.id, {"state": JobState.CANCELLED, "ended": ended}) for job in live])
    for stage in store.stages(run_id):
        if not stage.state.is_final:
            store.update_stage(
                run_id, stage.name, state=RunState.CANCELLED, reason=CANCEL_REASON, ended=ended
            )
    store.update_run(run_id, state=RunState.CANCELLED, reason=CANCEL_REASON, ended=ended)
    return Cancellation(run_id, None, len(live))


def _site_of_jobs(store: Store, run: RunRecord, name: str) -> Site:
    """The site document the run's jobs on `name` were submitted with: the recorded one,
    else (a run stored before runs kept them) the registered one."""
    document = run.site_documents.get(name)
    recorded = recorded_sites({name: document}) if document is not None else {}
    if name in recorded:
        return recorded[name]
    return store.get_site(name).site
