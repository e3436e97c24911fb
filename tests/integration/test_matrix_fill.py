"""An evaluation matrix on local sites (real processes, real MLflow store): the product
of three keys spread over two sites, one cell that fails on its first attempt, the
missing cell named, `run fill` rerunning exactly that cell, and a second fill that
submits nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.engine import EngineConfig, execute_run
from flows.fill import fill_run
from flows.launch import launch
from flows.results import (
    cell_counts,
    missing_cells,
    render_csv,
    result_columns,
    result_rows,
)
from registry.results import read_results
from registry.states import RunState
from registry.store import Store
from tests.helpers import consortium, write_yaml

# The job checks that every key reached it twice (argument and HPCFLEET_CELL_<KEY>), then
# reports two metrics for its cell; cs/flores/5 fails on attempt 1 only.
EVAL_PY = """\
import json, os, sys
language, task, n_shot = sys.argv[1:4]
cell = {k: os.environ["HPCFLEET_CELL_" + k.upper()] for k in ("language", "task", "n_shot")}
assert cell == {"language": language, "task": task, "n_shot": n_shot}, cell
assert os.environ["HPCFLEET_ARRAY_VALUE"] == f"language={language},task={task},n_shot={n_shot}"
if (language, task, n_shot) == ("cs", "flores", "5") and os.environ["HPCFLEET_ATTEMPT"] == "1":
    sys.exit(1)
with open(os.environ["HPCFLEET_METRICS"], "a") as out:
    for key, value in (("acc", 0.5), ("f1", 0.25)):
        line = {"key": key, "value": value, "language": language, "task": task,
                "n_shot": int(n_shot)}
        out.write(json.dumps(line) + "\\n")
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, EngineConfig]:
    config = EngineConfig(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        home=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
    )
    store = Store.open(config.database_url)
    consortium(store)
    return store, config


def _launch(store: Store, tmp_path: Path) -> str:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "eval.py").write_text(EVAL_PY)
    stage = {
        "name": "evaluate",
        "kind": "eval",
        "site": {"any_of": ["site-a", "site-b"]},
        "array": {"language": ["fi", "cs"], "task": ["belebele", "flores"], "n_shot": [0, 5]},
        "array_parallelism": 4,
        "retries": 0,
        "command": ["python3", "eval.py", "{language}", "{task}", "{n_shot}"],
    }
    document = {"name": "m", "experiment": "tests", "stages": [stage]}
    return launch(store, write_yaml(spec_dir / "run.yaml", document), "cuni").run.run_id


def _csv_cells(store: Store, run_id: str) -> tuple[list[str], set[tuple[str, str, str]]]:
    run = store.get_run(run_id)
    stored = read_results(store, run_id)
    columns = result_columns(run.spec, stored)
    rows = list(csv.DictReader(io.StringIO(render_csv(columns, result_rows(columns, stored)))))
    return columns, {(r["language"], r["task"], r["n_shot"]) for r in rows if r["metric"] == "acc"}


def test_fill_reruns_exactly_the_missing_cell(
    setup: tuple[Store, EngineConfig], tmp_path: Path
) -> None:
    store, config = setup
    run_id = _launch(store, tmp_path)

    run = execute_run(config, run_id)
    assert run.state is RunState.FAILED  # retries: 0, one cell failed
    stage = store.stages(run_id)[0]
    assert set(stage.sites) == {"site-a", "site-b"}  # spread over the eligible sites
    jobs = store.jobs(run_id, "evaluate")
    assert len(jobs) == 8 and {j.attempt for j in jobs} == {1}
    missing = missing_cells(run.spec, jobs, read_results(store, run_id))
    assert [(m.cell, m.why) for m in missing] == [
        ({"language": "cs", "task": "flores", "n_shot": "5"}, "failed")
    ]
    assert [c.text() for c in cell_counts(run.spec, jobs, read_results(store, run_id))] == [
        "7/8 cells, 1 missing (1 failed)"
    ]

    plan = fill_run(config, run_id)
    assert plan.cells == 1
    assert store.get_run(run_id).state is RunState.RUNNING  # reopened
    assert fill_run(config, run_id).cells == 0  # queued: a second fill submits nothing
    run = execute_run(config, run_id)
    assert run.state is RunState.COMPLETED, run.reason

    new_jobs = [j for j in store.jobs(run_id, "evaluate") if j.attempt == 2]
    assert [j.array_value for j in new_jobs] == ["language=cs,task=flores,n_shot=5"]
    columns, cells = _csv_cells(store, run_id)
    assert columns == [
        "checkpoint",
        "stage",
        "language",
        "task",
        "n_shot",
        "metric",
        "value",
        "site",
        "attempt",
    ]
    assert cells == {
        (language, task, shots)
        for language in ("fi", "cs")
        for task in ("belebele", "flores")
        for shots in ("0", "5")
    }
    assert len(read_results(store, run_id)) == 16  # two metrics per cell

    parent = MlflowClient(config.tracking_uri).get_run(run.mlflow_run_id or "")
    assert parent.data.metrics["acc/cs/flores/5"] == 0.5  # the filled cell, on the parent
    assert len([k for k in parent.data.metrics if k.startswith("f1/")]) == 8

    assert fill_run(config, run_id).cells == 0
    assert len(store.jobs(run_id, "evaluate")) == 9
    assert store.get_run(run_id).state is RunState.COMPLETED
