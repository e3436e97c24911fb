"""Evaluation matrices: product, exclusions and cells files; the jobs they become; result
lines with their cells; missing cells; the results table as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.jobs import build_request
from flows.layout import StageLayout
from flows.matrix import resolve_cells_files
from flows.metrics import parent_cell_key
from flows.results import (
    CellCount,
    job_results,
    missing_cells,
    missing_rows,
    render_csv,
    result_columns,
    result_rows,
)
from registry.errors import DocumentError
from registry.matrix import MAX_CELLS, MatrixError, cell_value, read_cells_csv
from registry.records import JobRecord
from registry.results import StoredResult
from registry.runspec import RunSpec
from registry.states import JobState
from tests.helpers import local_site

MATRIX = {"language": ["fi", "cs"], "task": ["belebele", "flores"], "n_shot": [0, 5]}
COMMAND = ["python3", "eval.py", "{language}", "{task}", "{n_shot}"]


def spec(array: dict[str, Any], **stage: Any) -> RunSpec:
    document = {"name": "eval", "site": "a", "array": array, "command": COMMAND, **stage}
    return RunSpec.model_validate({"name": "r", "stages": [document]})


def test_cells_are_the_product_of_the_keys_last_key_fastest() -> None:
    stage = spec(MATRIX).stage("eval")
    assert len(stage.cells) == 8
    assert stage.cells[:2] == [
        {"language": "fi", "task": "belebele", "n_shot": "0"},
        {"language": "fi", "task": "belebele", "n_shot": "5"},
    ]
    assert stage.array_values[-1] == "language=cs,task=flores,n_shot=5"
    assert stage.array_key == "language,task,n_shot"


def test_exclude_drops_every_matching_cell() -> None:
    stage = spec(MATRIX, exclude=[{"task": "flores", "n_shot": 5}]).stage("eval")
    assert len(stage.cells) == 6
    assert not [c for c in stage.cells if c["task"] == "flores" and c["n_shot"] == "5"]


def test_exclude_may_be_written_inside_the_array() -> None:
    stage = spec({**MATRIX, "exclude": [{"task": "flores", "n_shot": 5}]}).stage("eval")
    assert len(stage.cells) == 6
    assert stage.exclude == [{"task": "flores", "n_shot": 5}]


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        ([{"shots": 5}], "unknown key shots"),
        ([{"task": "flores", "n_shot": 3}], "matches no cell"),
    ],
)
def test_exclusions_that_cannot_be_meant_are_refused(
    exclude: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(MATRIX, exclude=exclude)


def test_one_key_arrays_keep_their_plain_values() -> None:
    stage = spec({"language": ["fi", "cs"]}, command=["e.py", "{language}"]).stage("eval")
    assert stage.array_values == ["fi", "cs"]
    assert stage.array_key == "language"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        ({"language": ["fi", "fi"], "task": ["x"]}, "array values repeat: fi"),
        ({"lang": ["fi"], "LANG": ["cs"]}, "differ only in case"),
        (
            {"language": [f"l{i}" for i in range(400)], "task": [f"t{i}" for i in range(400)]},
            f"more than {MAX_CELLS}",
        ),
    ],
)
def test_bad_matrices_are_refused(array: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(array, command=["e.py"])


def test_unknown_placeholder_names_the_array_keys() -> None:
    with pytest.raises(ValidationError, match=r"unknown placeholder \{shots\}.*\{n_shot\}"):
        spec(MATRIX, command=["e.py", "{shots}"])


def test_cells_from_a_csv_file() -> None:
    cells = read_cells_csv("language,task,n_shot\nfi,belebele,0\ncs, flores ,5\n\n", "t.csv")
    assert cells == [
        {"language": "fi", "task": "belebele", "n_shot": "0"},
        {"language": "cs", "task": "flores", "n_shot": "5"},
    ]
    assert cell_value(cells[1]) == "language=cs,task=flores,n_shot=5"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("language,task\nfi,belebele\nfi,belebele\n", "cells repeat"),
        ("language,task\nfi\n", "row 2: 1 fields"),
        ("language,language\nfi,cs\n", "appears twice"),
        ("lang uage\nfi\n", "header row"),
        ("language\n", "no cells"),
    ],
)
def test_bad_cells_files_are_refused(content: str, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        read_cells_csv(content, "t.csv")


def test_a_cells_file_is_read_at_launch_stored_in_the_spec_and_travels(tmp_path: Path) -> None:
    (tmp_path / "tasks.csv").write_text("language,task,n_shot\nfi,belebele,0\ncs,flores,5\n")
    unread = spec({"from": "tasks.csv"}, exclude=[])
    assert unread.stage("eval").cells == []
    resolved = resolve_cells_files(unread, tmp_path, "run.yaml")
    stage = resolved.stage("eval")
    assert stage.array_values == [
        "language=fi,task=belebele,n_shot=0",
        "language=cs,task=flores,n_shot=5",
    ]
    assert "tasks.csv" in resolved.files
    stored = RunSpec.model_validate(resolved.model_dump(mode="json"))
    assert stored.stage("eval").cells == stage.cells


def test_a_cells_file_whose_keys_the_command_does_not_know_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tasks.csv").write_text("language\nfi\n")
    with pytest.raises(DocumentError, match=r"unknown placeholder \{task\}"):
        resolve_cells_files(spec({"from": "tasks.csv"}), tmp_path, "run.yaml")
    with pytest.raises(DocumentError, match=r"no file 'other\.csv'"):
        resolve_cells_files(spec({"from": "other.csv"}), tmp_path, "run.yaml")


def test_a_cell_becomes_arguments_and_environment() -> None:
    run = spec(MATRIX)
    stage = run.stage("eval")
    request = build_request(
        run,
        stage,
        local_site("a", "cuni"),
        run_id="r1",
        attempt=1,
        layout=StageLayout("/w", "r1", "eval"),
        partition=None,
        share=[(7, stage.array_values[7])],
    )
    [task] = request.tasks
    assert task.argv == ("python3", "eval.py", "cs", "flores", "5")
    assert task.env["HPCFLEET_ARRAY_VALUE"] == "language=cs,task=flores,n_shot=5"
    assert task.env["HPCFLEET_CELL_LANGUAGE"] == "cs"
    assert task.env["HPCFLEET_CELL_N_SHOT"] == "5"
    assert task.env["HPCFLEET_METRICS"].endswith("/metrics/7.jsonl")


def job(index: int | None, state: JobState = JobState.COMPLETED, attempt: int = 1) -> JobRecord:
    return JobRecord(
        id=index or 0,
        run_id="r1",
        stage="eval",
        attempt=attempt,
        site="a",
        job_name="j",
        scheduler_id="1",
        array_index=index,
        array_value=None,
        state=state,
        ended=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_result_lines_carry_their_cell_the_last_value_per_metric_wins() -> None:
    stage = spec(MATRIX).stage("eval")
    lines = [
        {"key": "acc", "value": 0.1},
        {"key": "acc", "value": 0.61},
        {"key": "f1", "value": 0.5, "n_shot": 0, "checkpoint": "iter_100"},
        {"key": "acc", "value": "bad"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    results = job_results(stage, job(1), text)
    assert [(r.metric, r.value, r.cell, r.checkpoint) for r in results] == [
        ("acc", 0.61, {"language": "fi", "task": "belebele", "n_shot": "5"}, ""),
        ("f1", 0.5, {"language": "fi", "task": "belebele", "n_shot": "0"}, "iter_100"),
    ]


def test_missing_cells_say_why() -> None:
    run = spec(MATRIX)
    jobs = [job(0), job(1, JobState.FAILED), job(2, JobState.RUNNING)]
    results = [StoredResult("eval", "acc", 0.6, "a", 1, dict(run.stage("eval").cells[0]))]
    missing = missing_cells(run, jobs, results)
    assert [(m.index, m.why) for m in missing] == [
        (1, "failed"),
        (2, "running"),
        *((i, "not run") for i in range(3, 8)),
    ]
    columns, rows = missing_rows(missing)
    assert columns == ["stage", "language", "task", "n_shot", "why"]
    assert rows[0] == ["eval", "fi", "belebele", "5", "failed"]


def test_cell_counts_read_as_the_summary_says() -> None:
    assert CellCount("eval", 320, failed=5, not_run=3).text() == (
        "312/320 cells, 8 missing (5 failed, 3 not run)"
    )
    assert CellCount("eval", 8).text() == "8/8 cells"


def test_results_csv_has_the_contract_columns_and_empty_missing_keys() -> None:
    run = spec({"language": ["fi"]}, command=["e.py"])
    results = [StoredResult("eval", "acc", 0.61, "a", 2, {"language": "fi"})]
    columns = result_columns(run, results)
    text = render_csv(columns, result_rows(columns, results))
    assert text.splitlines()[0] == (
        "checkpoint,stage,language,task,n_shot,metric,value,site,attempt"
    )
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row == {
        "checkpoint": "",
        "stage": "eval",
        "language": "fi",
        "task": "",
        "n_shot": "",
        "metric": "acc",
        "value": "0.61",
        "site": "a",
        "attempt": "2",
    }


def test_a_cells_results_on_the_parent_run_are_a_path_of_its_values() -> None:
    assert parent_cell_key("acc", ["fi", "belebele", "5"]) == "acc/fi/belebele/5"
    assert parent_cell_key("acc", ["c++", "x"]) == "acc/c_x2B__x2B_/x"
    long = parent_cell_key("acc", ["a" * 200, "b" * 200])
    assert len(long) == 250 and long != parent_cell_key("acc", ["a" * 200, "b" * 199])
