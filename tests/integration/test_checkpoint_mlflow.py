"""Per-checkpoint MLflow children on a real MLflow store (SQLite, artifacts in a
directory): the requests a collection costs, the runs and tables read back, and a
resumed orchestrator updating the same children instead of making new ones; then
through the engine, with real local jobs."""

from __future__ import annotations

import csv
from pathlib import Path

from mlflow.tracking import MlflowClient

from flows.checkpoint_results import CHECKPOINT_TAG, RESULTS_TAG, TABLE_NAME, CheckpointRuns
from flows.engine import execute_run
from flows.launch import launch
from flows.tracking import Tracker
from registry.partner import Partner
from registry.results import StoredResult, read_results, replace_job_results
from registry.runspec import RunSpec
from registry.states import JobState, RunState
from registry.store import Store
from tests.helpers import consortium, embedded_engine, write_yaml

LANGUAGES = [f"l{i}" for i in range(25)]
TASKS = [f"t{i}" for i in range(50)]  # 1,250 cells, 2 metrics: 2,500 results a checkpoint


def _stored_run(store: Store) -> tuple[str, list[int]]:
    store.put_partner(Partner(id="p", name="P"))
    array = {"language": LANGUAGES, "task": TASKS}
    stage = {"name": "evaluate", "site": "a", "array": array, "command": ["true"]}
    spec = RunSpec.model_validate({"name": "r", "stages": [stage]})
    run_id = store.create_run("ck1", spec, "p", {}).run_id
    jobs = store.add_jobs([
        {"run_id": run_id, "stage": "evaluate", "attempt": 1, "site": "a",
         "job_name": f"hpcfleet-{run_id}-evaluate-1", "array_index": i, "array_value": value,
         "state": JobState.COMPLETED}
        for i, value in enumerate(spec.stage("evaluate").array_values)
    ])  # fmt: skip
    return run_id, [job.id for job in jobs]


def _results(store: Store, run_id: str, job_ids: list[int], checkpoint: str) -> list[StoredResult]:
    spec = store.get_run(run_id).spec
    batch = []
    for job_id, cell in zip(job_ids, spec.stage("evaluate").cells, strict=True):
        rows = [
            StoredResult("evaluate", m, 0.5, "a", 1, dict(cell), checkpoint) for m in ("acc", "f1")
        ]
        replace_job_results(store, run_id, job_id, rows)
        batch += rows
    return batch


def _table(client: MlflowClient, child: str, into: Path) -> dict[tuple[str, str, str], str]:
    """(language, task, metric) -> value of the child's results.csv."""
    path = client.download_artifacts(child, TABLE_NAME, str(into))
    with open(path) as handle:
        return {(r["language"], r["task"], r["metric"]): r["value"] for r in csv.DictReader(handle)}


def test_a_checkpoint_costs_a_few_requests_whatever_its_size(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    run_id, job_ids = _stored_run(store)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    experiment = tracker.experiment_id("tests")
    parent = tracker.start_run(experiment, "r", {"hpcfleet.run_id": run_id})
    tags = {"hpcfleet.run_id": run_id, "hpcfleet.partner": "p"}
    batch = _results(store, run_id, job_ids, "iter_1000")
    tracker.calls.clear()

    assert CheckpointRuns(store, tracker, experiment, parent, tags).log("evaluate", batch) == 2500
    # one search (a resumed process finds its children), one create, the table, one
    # batch of summaries, one end: 5 requests for 2,500 results
    assert dict(tracker.calls) == {
        "search_runs": 1, "create_run": 1, "log_artifact": 1, "log_batch": 1,
        "set_terminated": 1,
    }  # fmt: skip
    client = MlflowClient(tracker.tracking_uri)
    [child] = client.search_runs([experiment], f"tags.`{RESULTS_TAG}` = 'checkpoint'")
    assert child.data.tags[CHECKPOINT_TAG] == "iter_1000"
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["hpcfleet.stage"] == "evaluate"
    assert child.info.status == "FINISHED"
    assert child.data.metrics == {
        "mean/acc": 0.5, "cells/acc": 1250.0, "mean/f1": 0.5, "cells/f1": 1250.0
    }  # fmt: skip
    table = _table(client, child.info.run_id, tmp_path / "first")
    assert len(table) == 2500 and table[("l24", "t49", "f1")] == "0.5"

    # A new orchestrator process (a resume) after a refill of one cell: the same child,
    # its table and summaries rewritten from the registry, nothing created.
    replace_job_results(store, run_id, job_ids[0], [
        StoredResult("evaluate", "acc", 0.9, "a", 2, {"language": "l0", "task": "t0"}, "iter_1000")
    ])  # fmt: skip
    tracker.calls.clear()
    resumed = CheckpointRuns(store, tracker, experiment, parent, tags)
    assert resumed.log("evaluate", read_results(store, run_id)[-1:]) == 2499
    assert "create_run" not in tracker.calls
    assert resumed.log("evaluate", []) == 0
    runs = client.search_runs([experiment], f"tags.`{RESULTS_TAG}` = 'checkpoint'")
    assert [r.info.run_id for r in runs] == [child.info.run_id]
    assert runs[0].data.metrics["cells/acc"] == 1250.0
    assert runs[0].data.metrics["cells/f1"] == 1249.0  # that job reported no f1 this time
    table = _table(client, child.info.run_id, tmp_path / "second")
    assert len(table) == 2499 and table[("l0", "t0", "acc")] == "0.9"


def test_a_checkpoint_name_mlflow_would_refuse_is_skipped(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    run_id, job_ids = _stored_run(store)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    experiment = tracker.experiment_id("tests")
    parent = tracker.start_run(experiment, "r", {"hpcfleet.run_id": run_id})
    long_name = "iter_" + "9" * 9000  # a job's line may name any checkpoint
    rows = [
        StoredResult("evaluate", "acc", 0.5, "a", 1, {"language": "l0"}, long_name),
        StoredResult("evaluate", "acc", 0.5, "a", 1, {"language": "l1"}, "iter_1"),
    ]
    replace_job_results(store, run_id, job_ids[0], rows)
    runs = CheckpointRuns(store, tracker, experiment, parent, {"hpcfleet.run_id": run_id})
    assert runs.log("evaluate", rows) == 1
    client = MlflowClient(tracker.tracking_uri)
    children = client.search_runs([experiment], f"tags.`{RESULTS_TAG}` = 'checkpoint'")
    assert [c.data.tags[CHECKPOINT_TAG] for c in children] == ["iter_1"]


EVAL_PY = """\
import json, os, sys
language, task = sys.argv[1:3]
with open(os.environ["HPCFLEET_METRICS"], "a") as out:
    for step, checkpoint in enumerate(("iter_1000", "iter_2000")):
        line = {"key": "acc", "value": 0.5 + step / 10, "checkpoint": checkpoint}
        out.write(json.dumps(line) + "\\n")
"""


def test_the_engine_logs_one_child_per_checkpoint(tmp_path: Path) -> None:
    config = embedded_engine(tmp_path)
    store = Store.open(config.database_url)
    consortium(store)
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "eval.py").write_text(EVAL_PY)
    stage = {
        "name": "evaluate",
        "site": {"any_of": ["site-a", "site-b"]},
        "array": {"language": ["fi", "cs"], "task": ["belebele", "flores"]},
        "command": ["python3", "eval.py", "{language}", "{task}"],
    }
    document = {"name": "m", "experiment": "tests", "stages": [stage]}
    run_id = launch(store, write_yaml(spec_dir / "run.yaml", document), "cuni").run.run_id

    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name("tests")
    assert experiment is not None
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`{RESULTS_TAG}` = 'checkpoint'"
    )
    by_checkpoint = {c.data.tags[CHECKPOINT_TAG]: c for c in children}
    assert sorted(by_checkpoint) == ["iter_1000", "iter_2000"]
    for checkpoint, value in (("iter_1000", 0.5), ("iter_2000", 0.6)):
        child = by_checkpoint[checkpoint]
        assert child.data.tags["mlflow.parentRunId"] == run.mlflow_run_id
        assert child.data.tags["hpcfleet.run_id"] == run_id
        # four cells fit one request: each cell as a metric, besides the summaries
        assert child.data.metrics == {
            "mean/acc": value,
            "cells/acc": 4.0,
            **{
                f"acc/{task}/{language}": value
                for language in ("fi", "cs")
                for task in ("belebele", "flores")
            },
        }
        table = _table(client, child.info.run_id, tmp_path / checkpoint)
        assert set(table) == {
            (language, task, "acc") for language in ("fi", "cs") for task in ("belebele", "flores")
        }
