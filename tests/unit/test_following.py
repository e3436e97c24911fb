"""What a scheduler's answer changes in a followed job."""

from __future__ import annotations

from datetime import UTC, datetime

from flows.following import has_changed, status_fields
from registry.records import JobRecord
from registry.states import JobState
from sites.scheduler import JobStatus

STARTED = datetime(2026, 12, 1, 10, tzinfo=UTC)


def running(job_id: int = 1, scheduler_id: str = "7") -> JobRecord:
    return JobRecord(
        id=job_id,
        run_id="r1",
        stage="s",
        attempt=1,
        site="a",
        job_name="hpcfleet-r1-s-1",
        scheduler_id=scheduler_id,
        array_index=None,
        array_value=None,
        state=JobState.RUNNING,
        started=STARTED,
        node="n1",
    )


def test_only_changed_fields_are_written() -> None:
    same = JobStatus("7", JobState.RUNNING, started=STARTED, node="n1")
    assert status_fields(running(), same) == {}
    moved = JobStatus("7", JobState.RUNNING, node="n2", gpu_hours=0.5)
    assert status_fields(running(), moved) == {"node": "n2", "gpu_hours": 0.5}


def test_an_unknown_state_never_overwrites_a_known_one() -> None:
    assert status_fields(running(), JobStatus("7", JobState.UNKNOWN)) == {}
    assert not has_changed({"7": JobStatus("7", JobState.UNKNOWN)}, {"7"}, {1: running()})


def test_a_final_job_without_an_end_time_ends_now() -> None:
    fields = status_fields(running(), JobStatus("7", JobState.FAILED, exit_code=3))
    assert fields["state"] is JobState.FAILED and fields["exit_code"] == 3
    assert isinstance(fields["ended"], datetime)


def test_a_change_counts_only_for_the_ids_asked_about() -> None:
    live = {1: running(1, "7"), 2: running(2, "8")}
    latest = {"8": JobStatus("8", JobState.COMPLETED)}
    assert has_changed(latest, {"8"}, live)
    assert not has_changed(latest, {"7"}, live)
