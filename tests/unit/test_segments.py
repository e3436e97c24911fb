"""Segments of a chained stage (`chain: N`): how many are queued, which end the chain,
and that dropped segments never decide the stage's verdict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.chains import chainable_stages
from flows.planning import StagePlan
from flows.retry import failure_reason, next_tasks
from flows.segments import (
    dropped_reason,
    follow_up_count,
    goes_on,
    is_dropped,
    segment_rows,
    verdict_history,
)
from flows.tasks import PlannedTask
from registry.records import JobRecord
from registry.runspec import RunSpec, Stage
from registry.states import JobState


def stage(**fields: object) -> Stage:
    return Stage.model_validate(
        {"name": "train", "site": "site-a", "command": ["true"], "resumable": True, **fields}
    )


def segment(
    attempt: int, state: JobState, reason: str | None = None, **fields: object
) -> JobRecord:
    return JobRecord.model_validate(
        {
            "id": attempt,
            "run_id": "r1",
            "stage": "train",
            "attempt": attempt,
            "site": "site-a",
            "job_name": f"hpcfleet-r1-train-{attempt}",
            "scheduler_id": str(40 + attempt),
            "array_index": None,
            "array_value": None,
            "state": state,
            "reason": reason,
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("state", "next_one_runs"),
    [
        (JobState.TIMEOUT, True),
        (JobState.PREEMPTED, True),
        (JobState.NODE_FAIL, True),
        (JobState.COMPLETED, False),
        (JobState.FAILED, False),
        (JobState.OUT_OF_MEMORY, False),
        (JobState.CANCELLED, False),
    ],
)
def test_the_next_segment_takes_over_only_after_an_interruption(
    state: JobState, next_one_runs: bool
) -> None:
    assert goes_on(segment(1, state)) is next_one_runs


def test_a_chain_queues_its_segments_within_the_resumes_left() -> None:
    assert follow_up_count(stage(), []) == 0  # no chain
    assert follow_up_count(stage(chain=3), []) == 3
    interrupted = [segment(1, JobState.TIMEOUT), segment(2, JobState.TIMEOUT)]
    assert follow_up_count(stage(chain=3, max_resumes=4), interrupted) == 2
    assert follow_up_count(stage(chain=3, max_resumes=3), interrupted * 2) == 0
    # Dropped segments never ran: they use no resume.
    dropped = segment(3, JobState.CANCELLED, dropped_reason("segment 2 ended timeout"))
    assert follow_up_count(stage(chain=3, max_resumes=4), [*interrupted, dropped]) == 2


def test_dropped_segments_do_not_decide_the_verdict() -> None:
    history = [
        segment(1, JobState.TIMEOUT),
        segment(2, JobState.COMPLETED),
        segment(3, JobState.CANCELLED, dropped_reason("segment 2 ended completed")),
    ]
    assert is_dropped(history[2]) and not is_dropped(history[1])
    assert verdict_history(history) == history[:2]
    assert failure_reason(verdict_history(history)) is None
    assert next_tasks(stage(chain=2), verdict_history(history)) == []
    # Without the filter the cancelled segment would fail the stage.
    assert failure_reason(history) == "train on site-a ended cancelled after 3 attempts: " + (
        "segment dropped: segment 2 ended completed"
    )


def test_a_chain_that_ran_out_resumes_and_a_failed_segment_fails_the_stage() -> None:
    ran_out = [segment(1, JobState.TIMEOUT), segment(2, JobState.TIMEOUT)]
    assert next_tasks(stage(chain=1), ran_out) == [PlannedTask("site-a", None, None)]
    failed = [
        segment(1, JobState.TIMEOUT),
        segment(2, JobState.FAILED, exit_code=3),
        segment(3, JobState.CANCELLED, dropped_reason("segment 2 ended failed")),
    ]
    assert next_tasks(stage(chain=2), verdict_history(failed)) == []
    assert failure_reason(verdict_history(failed)) == (
        "train on site-a failed with exit code 3 after 2 attempts"
    )


def test_segments_are_listed_in_order_with_their_gpu_hours() -> None:
    start = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    rows = segment_rows(
        [
            segment(2, JobState.COMPLETED, started=start, gpu_hours=0.25, node="n2"),
            segment(3, JobState.CANCELLED, dropped_reason("segment 2 ended completed")),
            segment(1, JobState.TIMEOUT, started=start, gpu_hours=1.0, node="n1"),
        ]
    )
    assert [(r.number, r.job_id, r.state, r.node) for r in rows] == [
        (1, "41", "TIMEOUT", "n1"),
        (2, "42", "COMPLETED", "n2"),
        (3, "43", "DROPPED", None),
    ]
    assert rows[2].note == "segment 2 ended completed"
    assert sum(r.gpu_hours for r in rows) == 1.25


def test_a_stage_after_a_chained_one_waits_for_its_end_not_behind_its_segments() -> None:
    spec = RunSpec.model_validate(
        {
            "name": "r",
            "stages": [
                {"name": "train", "site": "a", "command": ["true"], "resumable": True, "chain": 2},
                {"name": "export", "site": "a", "command": ["true"], "needs": ["train"]},
            ],
        }
    )
    plans = {n: StagePlan(n, ("a",), {"a": None}, "named") for n in ("train", "export")}
    assert chainable_stages(spec, plans) == set()


def test_run_show_lists_each_segment_and_the_gpu_hours_of_all() -> None:
    from hpcfleet.display import segment_lines

    start = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    end = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    text = segment_lines(
        [
            segment(1, JobState.TIMEOUT, started=start, ended=end, gpu_hours=16.0, node="nid7"),
            segment(2, JobState.COMPLETED, started=end, ended=end, gpu_hours=0.5, node="nid8"),
            segment(3, JobState.CANCELLED, dropped_reason("segment 2 ended completed")),
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "segment",
        "job",
        "state",
        "node",
        "started",
        "ended",
        "gpu-h",
        "note",
    ]
    assert lines[1].split() == [
        "1",
        "41",
        "TIMEOUT",
        "nid7",
        "2026-12-02",
        "01:00:00",
        "2026-12-02",
        "03:00:00",
        "16.00",
    ]
    assert lines[3].split()[:3] == ["3", "43", "DROPPED"]
    assert lines[3].endswith("segment 2 ended completed")
    assert lines[4] == "3 segments, 16.50 GPU-hours"
