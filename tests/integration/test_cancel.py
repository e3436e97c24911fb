"""`flows.engine.cancel_run` (what `run cancel` calls), without any job to stop: who
cancels, and what is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.control.liveness import orchestrator_id
from flows.engine import RunEnded, cancel_run
from flows.launch import launch
from registry.states import RunState
from registry.store import Store, now
from tests.helpers import consortium, write_yaml


@pytest.fixture
def store_and_run(tmp_path: Path) -> tuple[Store, str]:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    spec = write_yaml(
        tmp_path / "run.yaml",
        {"name": "t", "stages": [{"name": "s", "site": "site-a", "command": ["true"]}]},
    )
    run_id = launch(store, spec, "cuni").run.run_id
    store.update_run(run_id, state=RunState.RUNNING)
    return store, run_id


def test_a_live_orchestrator_is_asked_and_cancels_its_jobs_itself(
    store_and_run: tuple[Store, str], tmp_path: Path
) -> None:
    store, run_id = store_and_run
    store.update_run(run_id, orchestrator=orchestrator_id(), heartbeat=now())
    done = cancel_run(store, run_id, tmp_path / "sites")
    assert (done.orchestrator, done.cancelled_jobs) == (orchestrator_id(), 0)
    run = store.get_run(run_id)
    assert run.cancel_requested and run.state is RunState.RUNNING


def test_without_a_live_orchestrator_the_cancellation_is_recorded_here(
    store_and_run: tuple[Store, str], tmp_path: Path
) -> None:
    store, run_id = store_and_run
    store.update_run(run_id, orchestrator="elsewhere:1", heartbeat=None)
    done = cancel_run(store, run_id, tmp_path / "sites")
    assert (done.orchestrator, done.cancelled_jobs) == (None, 0)
    run = store.get_run(run_id)
    assert (run.state, run.reason) == (RunState.CANCELLED, "cancelled on request")
    [stage] = store.stages(run_id)
    assert (stage.state, stage.reason) == (RunState.CANCELLED, "cancelled on request")
    with pytest.raises(RunEnded, match="already ended CANCELLED"):
        cancel_run(store, run_id, tmp_path / "sites")
