"""The Evaluations page's data: latest attempts, the checkpoint × language matrix with
its grey gaps, pickers, coverage and the checkpoint timeline. Pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd

from dashboard.data.evaluations import (
    NO_CHECKPOINT,
    checkpoint_language_matrix,
    checkpoint_order,
    checkpoint_step,
    checkpoint_timeline,
    coverage_frame,
    heatmap_stages,
    latest_results,
    picker_keys,
    picker_values,
    results_frame,
)
from flows.results import CellCount
from registry.results import StoredResult

CELLS = [
    {"language": lang, "task": task, "n_shot": shots}
    for lang in ("fi", "cs", "xx")
    for task in ("belebele", "flores")
    for shots in ("0", "5")
]


def result(lang: str, checkpoint: str, value: float, attempt: int = 1, task: str = "belebele",
           shots: str = "0", metric: str = "acc", site: str = "a") -> StoredResult:
    cell = {"language": lang, "task": task, "n_shot": shots}
    return StoredResult("evaluate", metric, value, site, attempt, cell, checkpoint)


def matrix_of(results: list[StoredResult], **fixed: str) -> dict[str, list[float | None]]:
    """The matrix's columns as lists, a gap as None."""
    latest = latest_results(results_frame(results))
    chosen = fixed or {"task": "belebele", "n_shot": "0"}
    matrix = checkpoint_language_matrix(latest, CELLS, "evaluate", "acc", chosen)
    return {str(c): [None if math.isnan(v) else v for v in matrix[c]] for c in matrix.columns} | {
        "rows": list(matrix.index)
    }


def test_matrix_has_languages_in_eu_order_and_checkpoints_by_step_with_gaps() -> None:
    shown = matrix_of([
        result("fi", "iter_10000", 0.7),
        result("cs", "iter_2000", 0.5),
        result("fi", "iter_2000", 0.6),
        result("fi", "iter_2000", 0.1, task="flores"),  # another task: not in this picture
    ])
    assert shown["rows"] == ["cs", "fi", "xx"]  # EU languages in their order, others after
    assert list(shown)[:2] == ["iter_2000", "iter_10000"]  # by step, not by text
    assert shown["iter_2000"] == [0.5, 0.6, None]  # xx is planned: a grey gap
    assert shown["iter_10000"] == [None, 0.7, None]


def test_the_latest_attempt_of_a_cell_is_shown() -> None:
    shown = matrix_of([result("fi", "c1", 0.9, attempt=2), result("fi", "c1", 0.2, attempt=1)])
    assert shown["c1"][1] == 0.9


def test_a_stage_without_checkpoints_has_one_column() -> None:
    shown = matrix_of([result("fi", "", 0.4)])
    assert list(shown) == [NO_CHECKPOINT, "rows"] and shown[NO_CHECKPOINT][1] == 0.4


def test_pickers_offer_the_other_keys_planned_values_first() -> None:
    frame = results_frame([result("fi", "c", 0.1, task="sib200")])
    assert picker_keys(CELLS, frame) == ["task", "n_shot"]
    assert picker_values("task", CELLS, frame) == ["belebele", "flores", "sib200"]
    # a one-key language array whose result lines name the task: a task picker anyway
    only_language = [{"language": "fi"}, {"language": "cs"}]
    assert picker_keys(only_language, frame) == ["n_shot", "task"]
    assert heatmap_stages({"evaluate": only_language, "train": []}, frame) == ["evaluate"]
    assert heatmap_stages({"other": [{"task": "a"}]}, results_frame([])) == []


def test_checkpoint_steps_are_the_last_number_of_the_name() -> None:
    assert checkpoint_step("iter_0002000") == 2000
    assert checkpoint_step("global_step500-v2") == 2
    assert checkpoint_step("final") is None
    assert checkpoint_order(["final", "iter_10", "iter_9", "iter_9"]) == [
        "iter_9", "iter_10", "final"
    ]


def test_coverage_parts_add_up_and_carry_the_summary() -> None:
    frame = coverage_frame([CellCount("evaluate", 320, failed=5, not_run=3)])
    assert dict(zip(frame["part"], frame["cells"], strict=True)) == {
        "with results": 312, "failed": 5, "running": 0, "not run": 3
    }
    assert set(frame["summary"]) == {"312/320 cells, 8 missing (5 failed, 3 not run)"}


def test_timeline_lists_checkpoints_with_step_and_where_evaluated() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        {"stage": "train", "name": "iter_2000", "found": t0 + timedelta(minutes=5),
         "sites": ["lumi"]},
        {"stage": "train", "name": "iter_1000", "found": t0},
        {"stage": "train", "name": "final", "found": t0 + timedelta(minutes=9)},
    ]
    results = results_frame([result("fi", "iter_1000", 0.4, site="karolina"),
                             result("cs", "iter_2000", 0.4, site="karolina")])
    timeline = checkpoint_timeline(rows, results)
    assert list(timeline["checkpoint"]) == ["iter_1000", "iter_2000", "final"]
    assert [None if pd.isna(s) else s for s in timeline["step"]] == [1000, 2000, None]
    assert list(timeline["evaluated_on"]) == ["karolina", "karolina, lumi", ""]
    assert len(checkpoint_timeline([])) == 0
