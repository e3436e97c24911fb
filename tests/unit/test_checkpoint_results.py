"""Cell results as per-checkpoint MLflow metrics: their keys and which value wins. Pure."""

from __future__ import annotations

from flows.checkpoint_results import cell_key, checkpoint_points, run_name
from flows.metrics import MetricPoint
from registry.results import StoredResult

CELL = {"language": "fi", "task": "belebele", "n_shot": "5"}


def result(
    value: float, attempt: int = 1, checkpoint: str = "iter_1000", **cell: str
) -> StoredResult:
    return StoredResult("evaluate", "acc", value, "a", attempt, cell or dict(CELL), checkpoint)


def test_keys_read_metric_task_language_shots_then_other_keys() -> None:
    assert cell_key("acc", CELL) == "acc/belebele/fi/5"
    assert cell_key("acc", {"seed": "3", "language": "cs"}) == "acc/cs/3"
    assert cell_key("acc", {"language": "a/b"}) == "acc/a_x2F_b"  # one component, escaped


def test_points_per_stage_and_checkpoint_with_the_latest_attempt() -> None:
    points = checkpoint_points(
        [
            result(0.4, attempt=2),
            result(0.1, attempt=1),  # an older attempt listed later loses
            result(0.7, checkpoint="iter_2000"),
            result(0.9, checkpoint=""),  # not an evaluation of a checkpoint
        ]
    )
    assert points == {
        ("evaluate", "iter_1000"): [MetricPoint("acc/belebele/fi/5", 0.4, step=2)],
        ("evaluate", "iter_2000"): [MetricPoint("acc/belebele/fi/5", 0.7, step=1)],
    }


def test_run_names_fit_mlflow() -> None:
    assert run_name("evaluate", "iter_1000") == "evaluate @ iter_1000"
    assert len(run_name("evaluate", "x" * 400)) == 250
