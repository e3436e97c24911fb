"""A checkpoint's cell results for MLflow: metric keys, which attempt wins, the summaries,
per-cell metrics only while they fit one request, the table. Pure."""

from __future__ import annotations

import csv
import io

from flows.checkpoint_results import (
    cell_key,
    checkpoint_points,
    latest_by_checkpoint,
    results_table,
    run_name,
)
from flows.metrics import MetricPoint
from registry.results import StoredResult

CELL = {"language": "fi", "task": "belebele", "n_shot": "5"}


def result(
    value: float, attempt: int = 1, checkpoint: str = "iter_1000", metric: str = "acc", **cell: str
) -> StoredResult:
    return StoredResult("evaluate", metric, value, "a", attempt, cell or dict(CELL), checkpoint)


def test_keys_read_metric_task_language_shots_then_other_keys() -> None:
    assert cell_key("acc", CELL) == "acc/belebele/fi/5"
    assert cell_key("acc", {"seed": "3", "language": "cs"}) == "acc/cs/3"
    assert cell_key("acc", {"language": "a/b"}) == "acc/a_x2F_b"  # one component, escaped


def test_the_latest_attempt_of_each_cell_per_checkpoint() -> None:
    latest = latest_by_checkpoint([
        result(0.4, attempt=2),
        result(0.1, attempt=1),  # an older attempt stored later loses
        result(0.7, checkpoint="iter_2000"),
        result(0.9, checkpoint=""),  # not an evaluation of a checkpoint
    ])  # fmt: skip
    assert {c: [(r.value, r.attempt) for r in rs] for c, rs in latest.items()} == {
        "iter_1000": [(0.4, 2)],
        "iter_2000": [(0.7, 1)],
    }


def test_summaries_and_per_cell_metrics_while_they_fit_one_request() -> None:
    few = [result(0.5, language=f"l{i}") for i in range(3)] + [result(1.0, metric="f1")]
    assert checkpoint_points(few)[:4] == [
        MetricPoint("mean/acc", 0.5),
        MetricPoint("cells/acc", 3.0),
        MetricPoint("mean/f1", 1.0),
        MetricPoint("cells/f1", 1.0),
    ]
    assert MetricPoint("acc/l1", 0.5, step=1) in checkpoint_points(few)
    many = [result(0.5, language=f"l{i}") for i in range(999)]  # 2 summaries + 999 > 1,000
    assert [p.key for p in checkpoint_points(many)] == ["mean/acc", "cells/acc"]


def test_the_table_has_the_columns_of_results_csv() -> None:
    rows = list(csv.DictReader(io.StringIO(results_table([result(0.25, attempt=2)]))))
    assert rows == [{
        "checkpoint": "iter_1000", "stage": "evaluate", "language": "fi", "task": "belebele",
        "n_shot": "5", "metric": "acc", "value": "0.25", "site": "a", "attempt": "2",
    }]  # fmt: skip


def test_run_names_fit_mlflow() -> None:
    assert run_name("evaluate", "iter_1000") == "evaluate @ iter_1000"
    assert len(run_name("evaluate", "x" * 400)) == 250
