"""Retrying only what a retry can help: transient errors within a deadline, and the
stage retry policy (which tasks run again, where, and why a stage failed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.credentials import RenewalWait
from flows.retry import (
    cancelled_tasks,
    failed_nodes,
    failure_reason,
    next_tasks,
    with_retries,
)
from flows.tasks import PlannedTask
from registry.records import JobRecord
from registry.runspec import Stage
from registry.states import JobState
from sites.errors import CredentialsExpired, SiteError, SiteUnreachable


def test_transient_errors_are_retried_until_success() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SiteUnreachable("site-b", "connection refused")
        return "ok"

    assert with_retries(flaky, "probe", sleep=sleeps.append) == "ok"
    assert sleeps == [2.0, 4.0]


def test_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []

    def broken() -> None:
        raise SiteError("site-b", "permission denied", transient=False)

    with pytest.raises(SiteError, match="permission denied"):
        with_retries(broken, "probe", sleep=sleeps.append)
    assert sleeps == []


def test_gives_up_after_the_deadline() -> None:
    sleeps: list[float] = []

    def down() -> None:
        raise SiteUnreachable("site-b", "timed out")

    with pytest.raises(SiteUnreachable):
        with_retries(down, "probe", max_wait=30, sleep=sleeps.append)
    assert sum(sleeps) <= 30 and sleeps == [2.0, 4.0, 8.0, 16.0]


# --------------------------------------------------------------- the stage retry policy


def stage(**fields: object) -> Stage:
    return Stage.model_validate({"name": "train", "site": "site-a", "command": ["true"], **fields})


def job(
    state: JobState,
    attempt: int = 1,
    *,
    site: str = "site-a",
    index: int | None = None,
    node: str | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
) -> JobRecord:
    return JobRecord(
        id=attempt * 100 + (index or 0),
        run_id="r1",
        stage="train",
        attempt=attempt,
        site=site,
        job_name=f"hpcfleet-r1-train-{attempt}",
        scheduler_id=str(attempt),
        array_index=index,
        array_value=None if index is None else f"v{index}",
        state=state,
        node=node,
        exit_code=exit_code,
        reason=reason,
    )


def test_a_failed_task_is_tried_again_until_its_retries_are_spent() -> None:
    twice = stage(retries=2)
    history = [job(JobState.FAILED, 1)]
    assert next_tasks(twice, history) == [PlannedTask("site-a", None, None)]
    history.append(job(JobState.NODE_FAIL, 2))
    assert next_tasks(twice, history) == [PlannedTask("site-a", None, None)]
    history.append(job(JobState.FAILED, 3))
    assert next_tasks(twice, history) == []
    assert failure_reason(history) == "train on site-a ended failed after 3 attempts"


def test_only_the_failed_tasks_of_an_array_run_again_sorted_by_site_and_index() -> None:
    history = [
        job(JobState.FAILED, site="site-b", index=2),
        job(JobState.COMPLETED, site="site-a", index=0),
        job(JobState.FAILED, site="site-a", index=1),
    ]
    assert next_tasks(stage(retries=1), history) == [
        PlannedTask("site-a", 1, "v1"),
        PlannedTask("site-b", 2, "v2"),
    ]


def test_timeouts_are_resumed_only_when_the_stage_is_resumable() -> None:
    history = [job(JobState.TIMEOUT, 1)]
    assert next_tasks(stage(retries=3), history) == []
    assert failure_reason(history) == (
        "train on site-a hit its time limit; raise resources.time or set resumable"
    )
    resumable = stage(resumable=True, max_resumes=1)
    assert next_tasks(resumable, history) == [PlannedTask("site-a", None, None)]
    # Interruptions and failures are counted apart.
    history += [job(JobState.PREEMPTED, 2)]
    assert next_tasks(resumable, history) == []
    assert next_tasks(stage(resumable=True, max_resumes=5), history) != []


def test_out_of_memory_is_never_retried_and_says_what_to_raise() -> None:
    history = [job(JobState.OUT_OF_MEMORY, exit_code=137, index=0)]
    assert next_tasks(stage(retries=5, resumable=True), history) == []
    assert failure_reason(history) == "train[v0] on site-a ran out of memory; raise resources.mem"


def test_failure_reason_names_the_exit_code_and_the_schedulers_reason() -> None:
    failed = [job(JobState.FAILED, exit_code=3, reason="exit code 3")]
    assert failure_reason(failed) == "train on site-a failed with exit code 3: exit code 3"
    assert failure_reason([job(JobState.FAILED, 1), job(JobState.COMPLETED, 2)]) is None


def test_the_next_attempt_avoids_nodes_where_tasks_failed() -> None:
    history = [
        job(JobState.FAILED, 1, node="gpu-1"),
        job(JobState.NODE_FAIL, 2, node="gpu-2"),
        job(JobState.TIMEOUT, 3, node="gpu-3"),
        job(JobState.FAILED, 4, site="local", node="localhost"),
        job(JobState.FAILED, 5, node=None),
    ]
    assert failed_nodes(history) == {"site-a": {"gpu-1", "gpu-2"}}


def test_cancelled_tasks_are_those_to_submit_again_after_a_chain_retry() -> None:
    jobs = [job(JobState.CANCELLED, index=0), job(JobState.COMPLETED, index=1)]
    assert cancelled_tasks(jobs) == [PlannedTask("site-a", 0, "v0")]


# --------------------------------------------------------------- expired credentials


def _expired(site: str = "leonardo") -> CredentialsExpired:
    return CredentialsExpired(site, datetime(2026, 12, 1, 21, 0, tzinfo=UTC))


def test_expired_credentials_are_waited_for_past_the_deadline_then_it_continues() -> None:
    sleeps: list[float] = []
    notes: list[str | None] = []
    calls: list[int] = []

    def login() -> str:
        calls.append(1)
        if len(calls) <= 40:  # 40 polls of 30 s: far beyond the 5-minute deadline
            raise _expired()
        return "ok"

    result = with_retries(
        login, "staging", max_wait=300, sleep=sleeps.append, renewal=RenewalWait(notes.append)
    )

    assert result == "ok"
    assert sum(sleeps) > 300
    assert notes == [
        "credentials for site leonardo expired at 2026-12-01 21:00:00 UTC: "
        "renew them, e.g. `step ssh login`",
        None,  # the state text is cleared once the login works again
    ]


def test_cancelling_the_run_ends_the_wait_for_credentials() -> None:
    sleeps: list[float] = []

    def login() -> None:
        raise _expired()

    cancelled = iter([False, False, True])
    with pytest.raises(CredentialsExpired):
        with_retries(
            login,
            "staging",
            sleep=sleeps.append,
            renewal=RenewalWait(cancelled=lambda: next(cancelled)),
        )
    assert len(sleeps) == 2
