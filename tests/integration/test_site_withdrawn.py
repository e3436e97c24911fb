"""A site removed, or no longer shared, under a live run (local sites, embedded stores):
the run's live jobs stay cancellable by the partner that launched them, and no stage
that has not started is placed on that site; the refusal names the site and the reason
and shows in `run show`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from registry.states import JobState, RunState
from registry.store import Store
from sites.driver import DriverPool
from sites.processes import group_alive
from tests.helpers import (
    REPO,
    cli,
    cli_env,
    consortium,
    embedded_engine,
    local_site,
    wait_until,
    write_yaml,
)

# Drives a stored run in a process of its own, which the test can kill.
ORCHESTRATOR = (
    "import sys; from pathlib import Path; from flows.engine import EngineConfig, execute_run; "
    "execute_run(EngineConfig(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]), "
    "sys.argv[5])"
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Store, EngineConfig]]:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    yield store, config
    store.close()
    # Stop whatever a failed test left running on the local sites.
    drivers = DriverPool(tmp_path / "sites")
    for site in (local_site("site-a", "cuni"), local_site("site-b", "csc")):
        jobs = tmp_path / "sites" / site.name / ".hpcfleet-local" / "jobs"
        if jobs.exists():
            drivers.get(site).scheduler.cancel([p.name for p in jobs.iterdir() if p.name.isdigit()])
    drivers.close()


def start(store: Store, tmp_path: Path, stages: list[dict[str, Any]]) -> str:
    document = {"name": "t", "experiment": "tests", "stages": stages}
    return launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run.run_id


def two_stages(first_script: str) -> list[dict[str, Any]]:
    """`first` on cuni's own site-a, then `second` on csc's site-b (shared with cuni)."""
    return [
        {"name": "first", "site": "site-a", "script": first_script},
        {"name": "second", "site": "site-b", "needs": ["first"], "command": ["true"]},
    ]


def drive_while(config: EngineConfig, run_id: str, change: Any, until: Any) -> None:
    """Drive the run in a thread; apply `change` once `until()` holds; wait for the end."""
    driver = threading.Thread(target=execute_run, args=(config, run_id))
    driver.start()
    try:
        wait_until(until, timeout=60, interval=0.05)
        change()
    finally:
        driver.join(timeout=120)


def first_running(store: Store, run_id: str) -> Any:
    return lambda: any(j.state is JobState.RUNNING for j in store.jobs(run_id, "first"))


def test_a_stage_is_not_placed_on_a_site_unshared_while_the_run_goes(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(store, tmp_path, two_stages("sleep 2"))
    unshared = local_site("site-b", "csc", shared_with=[], local={"slots": 2, "gpus": 1})
    drive_while(
        config, run_id, lambda: store.put_site(unshared, "csc"), first_running(store, run_id)
    )
    run = store.get_run(run_id)
    first, second = store.stages(run_id)
    assert first.state is RunState.COMPLETED
    assert second.state is RunState.FAILED
    assert second.reason == (
        "not started: site 'site-b' (partner 'csc') is no longer shared with partner 'cuni'"
    )
    assert store.jobs(run_id, "second") == []
    assert run.state is RunState.FAILED and "site 'site-b'" in (run.reason or "")


def test_a_stage_is_not_placed_on_a_site_removed_while_the_run_goes(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = start(store, tmp_path, two_stages("sleep 2"))
    drive_while(
        config,
        run_id,
        lambda: store.remove_site("site-b", "csc"),
        first_running(store, run_id),
    )
    second = store.stages(run_id)[1]
    assert second.state is RunState.FAILED
    assert second.reason == "not started: site 'site-b' was removed from the registry"
    assert store.jobs(run_id, "second") == []
    shown = cli(cli_env(tmp_path), "run", "show", run_id)
    assert "not started: site 'site-b' was removed from the registry" in shown.stdout


def test_a_resumed_run_refuses_the_removed_site_stage_by_stage(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    """Removed before the orchestrator (re)started: the run is driven, not refused whole."""
    store, config = setup
    run_id = start(store, tmp_path, two_stages("true"))
    store.remove_site("site-b", "csc")
    run = execute_run(config, run_id)
    first, second = store.stages(run_id)
    assert first.state is RunState.COMPLETED
    assert second.reason == "not started: site 'site-b' was removed from the registry"
    assert run.state is RunState.FAILED


def test_run_cancel_stops_a_live_job_on_a_site_removed_since(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    """The orchestrator died with a job live on site-b; csc then removed site-b. The
    launcher's `run cancel` still stops that job, through the site the run recorded."""
    store, config = setup
    run_id = start(store, tmp_path, [{"name": "s", "site": "site-b", "command": ["sleep", "300"]}])
    orchestrator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ORCHESTRATOR,
            config.database_url,
            str(config.home),
            config.tracking_uri,
            str(config.artifact_root),
            run_id,
        ],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: any(j.state is JobState.RUNNING for j in store.jobs(run_id)), timeout=120
        )
    finally:
        os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()
    [job] = store.jobs(run_id)
    assert job.scheduler_id is not None
    store.remove_site("site-b", "csc")

    result = cli(cli_env(tmp_path), "run", "cancel", run_id, "--as", "cuni")
    assert result.returncode == 0, result.stderr
    assert f"run {run_id}: cancelled 1 live job(s)" in result.stderr
    site_b = local_site("site-b", "csc", shared_with=["cuni"], local={"slots": 2, "gpus": 1})
    scheduler = DriverPool(tmp_path / "sites").get(site_b).scheduler
    status = scheduler.status([job.scheduler_id])[job.scheduler_id]
    assert status.state is JobState.CANCELLED
    assert store.get_run(run_id).state is RunState.CANCELLED
    assert [j.state for j in store.jobs(run_id)] == [JobState.CANCELLED]
    pgid = scheduler_task_group(tmp_path, job.scheduler_id)
    assert pgid is None or not group_alive(pgid)


def scheduler_task_group(home: Path, job_id: str) -> int | None:
    """The process group the local scheduler recorded for task 0 of `job_id` on site-b."""
    from sites.local.runner import read_task

    jobdir = home / "sites" / "site-b" / ".hpcfleet-local" / "jobs" / job_id
    return read_task(jobdir, 0).pgid
