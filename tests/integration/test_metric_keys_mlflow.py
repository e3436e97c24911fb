"""Ordinary values never fail finished work (real processes, real MLflow SQLite store):
an array value like `c++` is escaped in the parent's metric keys, and a job's own key that
MLflow refuses (`a/../b`) is skipped with a warning on its run, not a failed run."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from flows.engine import execute_run
from flows.launch import launch
from registry.states import RunState
from registry.store import Store
from tests.helpers import consortium, embedded_engine, write_yaml

METRICS = (
    'printf \'{"key": "acc", "value": %s}\\n\' "${#HPCFLEET_ARRAY_VALUE}" >> "$HPCFLEET_METRICS"; '
    'printf \'{"key": "a/../b", "value": 1}\\n\' >> "$HPCFLEET_METRICS"'
)


def test_values_and_keys_mlflow_refuses_do_not_fail_the_run(tmp_path: Path) -> None:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    stages = [
        {"name": "eval", "site": "site-a", "array": {"lang": ["c++", "fi"]}, "script": METRICS},
        {"name": "after", "site": "site-a", "needs": ["eval"], "command": ["true"]},
    ]
    spec = write_yaml(tmp_path / "run.yaml", {"name": "t", "experiment": "keys", "stages": stages})
    launched = launch(store, spec, "cuni")
    assert any("'c++' as 'c_x2B__x2B_'" in w for w in launched.warnings)

    run = execute_run(config, launched.run.run_id)
    assert run.state is RunState.COMPLETED, run.reason
    assert [s.state for s in store.stages(run.run_id)] == [RunState.COMPLETED] * 2

    client = MlflowClient(config.tracking_uri)
    parent = client.get_run(run.mlflow_run_id or "")
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("acc/")} == {
        "acc/c_x2B__x2B_": 3.0,
        "acc/fi": 2.0,
    }
    assert parent.data.tags["hpcfleet.array_value/c_x2B__x2B_"] == "c++"
    experiment = client.get_experiment_by_name("keys")
    children = client.search_runs([experiment.experiment_id], "tags.`hpcfleet.array_value` = 'c++'")
    assert len(children) == 1
    child = children[0].data
    assert "a/../b" not in child.metrics and child.metrics["acc"] == 3.0
    assert "bad key 'a/../b', skipped" in child.tags["hpcfleet.metrics_skipped"]


def test_one_bad_key_does_not_lose_the_batch(tmp_path: Path) -> None:
    from flows.metrics import MetricPoint
    from flows.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "art").as_uri())
    run_id = tracker.start_run(tracker.experiment_id("batch"), "r", {})
    tracker.log_metrics(run_id, [MetricPoint("a//b", 1.0), MetricPoint("acc", 0.5)])
    assert MlflowClient(tracker.tracking_uri).get_run(run_id).data.metrics == {"acc": 0.5}
