"""The shared control plane's orchestrator refuses `scheduler: local` sites before it
submits anything; the embedded default runs them (real registry, MLflow store, local
scheduler). The worker's side, through Prefect, is in tests/e2e/test_server.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flows.engine import LocalSiteRefused, execute_run
from flows.launch import launch
from registry.states import RunState
from registry.store import Store
from tests.helpers import consortium, embedded_engine, write_yaml


def launched(tmp_path: Path) -> tuple[Store, str]:
    store = Store.open(embedded_engine(tmp_path).database_url)
    consortium(store)
    document = {"name": "local", "stages": [
        {"name": "touch", "site": "site-a", "command": ["touch", str(tmp_path / "ran")]}]}
    return store, launch(store, write_yaml(tmp_path / "run.yaml", document), "cuni").run.run_id


def test_the_shared_orchestrator_refuses_a_local_site_and_says_why(tmp_path: Path) -> None:
    store, run_id = launched(tmp_path)
    shared = replace(embedded_engine(tmp_path), shared=True)
    with pytest.raises(LocalSiteRefused, match="site 'site-a' is 'scheduler: local'"):
        execute_run(shared, run_id)
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED and run.orchestrator is None
    assert "the shared control plane does not run jobs on its own machine" in (run.reason or "")
    assert [(s.state, s.reason) for s in store.stages(run_id)] == [
        (RunState.FAILED, f"not started: {run.reason}")]
    assert store.jobs(run_id) == [] and not (tmp_path / "ran").exists()
    assert run.mlflow_run_id is None  # nothing tracked either


def test_the_embedded_default_runs_local_sites(tmp_path: Path) -> None:
    _, run_id = launched(tmp_path)
    assert execute_run(embedded_engine(tmp_path), run_id).state is RunState.COMPLETED
    assert (tmp_path / "ran").exists()
