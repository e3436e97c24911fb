"""The `cross_site_run` Prefect flow: one task run per stage, over `flows.engine`.

Call `flows.engine_env.configure_engines()` before importing this module. The number of
Prefect task runs grows with stages only: polling happens in the per-site watchers, not
in tasks.
"""

from __future__ import annotations

import threading

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.chains import awaited_needs
from flows.context import RunContext
from flows.engine import EngineConfig, conclude, guarded, run_context
from flows.settings import Settings
from flows.stage_runner import run_stage
from registry.store import Store

# Stage tasks run in the flow's own process; they find their run's context here.
_contexts: dict[str, RunContext] = {}
_contexts_lock = threading.Lock()


def orchestrator_config() -> EngineConfig:
    """The engine's configuration from this process's settings (HPCFLEET_*, MLflow's
    variables): the worker's environment on the control plane, the CLI's own when
    `hpcfleet run launch --wait` runs the flow in-process."""
    settings = Settings()
    return EngineConfig(
        settings.store_url,
        settings.home,
        settings.tracking_uri,
        settings.artifact_root,
        shared=settings.control_plane,
    )


@task(name="stage", cache_policy=NO_CACHE, task_run_name="{name}")
def stage_task(run_id: str, name: str) -> str:
    with _contexts_lock:
        ctx = _contexts[run_id]
    return guarded(run_stage, ctx, name).value


@flow(
    name="cross-site-run",
    flow_run_name="{run_id}",
    task_runner=ThreadPoolTaskRunner(max_workers=64),  # type: ignore[arg-type]
    log_prints=False,
)
def cross_site_run(run_id: str, force: bool = False) -> str:
    """Drive run `run_id` (already stored by `hpcfleet run launch`) to its end.

    The run id is all a caller gives: where the registry, the home and MLflow are comes
    from this process's own settings (`orchestrator_config`), so that whoever may create
    flow runs through Prefect's API cannot point the worker at another database or store.
    """
    config = orchestrator_config()
    flow_run_id = str(flow_run.id) if flow_run.id else None
    ended = Store.open(config.database_url).get_run(run_id).state
    if ended.is_final:  # e.g. cancelled while this flow run was still queued
        return ended.value
    with run_context(config, run_id, flow_run_id=flow_run_id, force=force) as ctx:
        with _contexts_lock:
            _contexts[run_id] = ctx
        try:
            futures: dict[str, PrefectFuture[str]] = {}
            awaited = awaited_needs(ctx.spec, ctx.chained)
            for name in ctx.spec.order:
                needs = [futures[n] for n in awaited[name]]
                futures[name] = stage_task.submit(  # type: ignore[call-overload]
                    run_id, name, wait_for=needs
                )
            wait(list(futures.values()))
            return conclude(ctx).state.value
        finally:
            with _contexts_lock:
                _contexts.pop(run_id, None)
