"""`LocalScheduler` with real processes: what only the local scheduler does (slots,
signals and process groups, grace periods, time limits, its state files across a
restart, vanished runners, request checks). What every scheduler does is in
test_scheduler_contract.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from registry.states import JobState
from sites.errors import SchedulerError
from sites.local.runner import jobs_dir, read_task, task_state_path
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_final(scheduler: LocalScheduler, job_id: str) -> dict[str, JobStatus]:
    def final() -> dict[str, JobStatus] | None:
        statuses = scheduler.status([job_id])
        done = statuses and all(s.state.is_final for s in statuses.values())
        return statuses if done else None

    return wait_for(final, f"job {job_id} to end")


def wait_state(scheduler: LocalScheduler, key: str, state: JobState) -> JobStatus:
    def reached() -> JobStatus | None:
        status = scheduler.status([key]).get(key)
        return status if status is not None and status.state is state else None

    return wait_for(reached, f"{key} to be {state.value}")


def written(path: Path) -> str:
    """The contents of `path` once something has been written to it."""
    return wait_for(lambda: (path.exists() and path.read_text()) or None, path.name)


def live_group_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[LocalScheduler]:
    sched = LocalScheduler("laptop", tmp_path / "site", slots=2)
    yield sched
    # Stop whatever a failed test left running.
    jobs = jobs_dir(sched.state_dir)
    if jobs.exists():
        sched.cancel([p.name for p in jobs.iterdir() if p.name.isdigit()])


class Jobs:
    """Builds requests whose workdir and logs live under the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.workdir = tmp_path / "work"
        self.workdir.mkdir()
        self.logs = tmp_path / "logs"
        self.count = 0

    def request(
        self,
        *tasks: TaskSpec,
        time_seconds: int = 600,
        gpus: int = 0,
        after_ok: Sequence[str] = (),
    ) -> JobRequest:
        self.count += 1
        return JobRequest(
            name=f"hpcfleet-test-stage{self.count}-1",
            workdir=str(self.workdir),
            tasks=tasks,
            resources=JobResources(time_seconds=time_seconds, gpus=gpus),
            log_dir=str(self.logs / f"job{self.count}"),
            after_ok=tuple(after_ok),
        )


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path)


def script(text: str) -> TaskSpec:
    return TaskSpec(script=text)


def python_task(code: str) -> TaskSpec:
    return TaskSpec(argv=(sys.executable, "-c", code))


# Writes its process group id to ./pgid, then sleeps.
SLEEPER = python_task(
    "import os, time; open('pgid', 'w').write(str(os.getpgid(0))); time.sleep(60)"
)


def started_sleeper(scheduler: LocalScheduler, jobs: Jobs) -> tuple[str, int]:
    """Submit SLEEPER and wait until it runs; its job id and process group."""
    job_id = scheduler.submit(jobs.request(SLEEPER))
    wait_state(scheduler, job_id, JobState.RUNNING)
    return job_id, int(written(jobs.workdir / "pgid"))


# --------------------------------------------------------------------------- tests


def test_array_never_runs_more_tasks_than_slots(scheduler: LocalScheduler, jobs: Jobs) -> None:
    # Each task counts the tasks running beside it; the first two also wait for each
    # other, which only works if both slots are really used.
    body = script(
        "i=$HPCFLEET_ARRAY_INDEX; mkdir -p running started\n"
        "touch running/$i started/$i; ls running | wc -l >> counts\n"
        "for _ in $(seq 400); do [ $(ls started | wc -l) -ge 2 ] && break; sleep 0.05; done\n"
        "[ $(ls started | wc -l) -ge 2 ] || exit 1\n"
        "sleep 0.3; rm running/$i\n"
    )
    job_id = scheduler.submit(jobs.request(body, body, body, body))

    most_running = 0
    while True:
        # States only move forward, so a task RUNNING in two consecutive reads was
        # RUNNING in between: this count never includes tasks that merely raced a read.
        first, second = scheduler.status([job_id]), scheduler.status([job_id])
        both = [k for k in first if first[k].state is second[k].state is JobState.RUNNING]
        most_running = max(most_running, len(both))
        if all(s.state.is_final for s in second.values()):
            break
        time.sleep(0.02)

    assert most_running <= 2
    assert {k: s.state for k, s in second.items()} == {
        f"{job_id}_{i}": JobState.COMPLETED for i in range(4)
    }
    counts = [int(n) for n in (jobs.workdir / "counts").read_text().split()]
    assert len(counts) == 4 and max(counts) <= 2


def test_cancel_stops_a_running_job_and_its_process_group(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    job_id, pgid = started_sleeper(scheduler, jobs)
    assert live_group_members(pgid)

    scheduler.cancel([job_id])

    assert scheduler.status([job_id])[job_id].state is JobState.CANCELLED
    wait_for(lambda: not live_group_members(pgid), "the job's process group to be gone")


def test_cancel_kills_a_job_that_ignores_sigterm(tmp_path: Path, jobs: Jobs) -> None:
    scheduler = LocalScheduler("laptop", tmp_path / "site", kill_grace_seconds=0.5)
    stubborn = python_task(
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "open('pgid', 'w').write(str(os.getpgid(0))); time.sleep(60)"
    )
    job_id = scheduler.submit(jobs.request(stubborn))
    pgid = int(written(jobs.workdir / "pgid"))

    scheduler.cancel([job_id])

    assert scheduler.status([job_id])[job_id].state is JobState.CANCELLED
    wait_for(lambda: not live_group_members(pgid), "the job's process group to be gone")


def test_a_cancelled_job_gets_its_grace_to_handle_sigterm(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    # Like a training job saving a checkpoint: it needs a moment after SIGTERM.
    checkpointing = python_task(
        "import signal, sys, time\n"
        "def save(*_):\n"
        "    time.sleep(0.5); open('checkpoint', 'w').write('saved'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, save)\n"
        "open('ready', 'w').close()\n"
        "time.sleep(60)\n"
    )
    job_id = scheduler.submit(jobs.request(checkpointing))
    wait_for(lambda: (jobs.workdir / "ready").exists(), "the job to install its handler")

    scheduler.cancel([job_id])

    assert scheduler.status([job_id])[job_id].state is JobState.CANCELLED
    assert (jobs.workdir / "checkpoint").read_text() == "saved"


def test_processes_a_job_leaves_behind_are_stopped_when_it_ends(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    job_id = scheduler.submit(jobs.request(script("sleep 60 & echo $! > bg; exit 0")))

    assert wait_final(scheduler, job_id)[job_id].state is JobState.COMPLETED
    leftover = int((jobs.workdir / "bg").read_text())
    wait_for(lambda: not live_group_members(leftover_pgid(leftover)), "the leftover to stop")


def leftover_pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def test_cancel_of_a_pending_task_means_it_never_runs(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    blocker = scheduler.submit(jobs.request(script("sleep 60")))
    waiting = jobs.request(script("touch ran"), after_ok=[blocker])
    waiting_id = scheduler.submit(waiting)
    wait_state(scheduler, blocker, JobState.RUNNING)

    scheduler.cancel([waiting_id])

    assert scheduler.status([waiting_id])[waiting_id].state is JobState.CANCELLED
    assert scheduler.status([blocker])[blocker].state is JobState.RUNNING
    assert not (jobs.workdir / "ran").exists()


def test_time_limit_ends_the_job_as_timeout(scheduler: LocalScheduler, jobs: Jobs) -> None:
    job_id = scheduler.submit(jobs.request(script("sleep 30"), time_seconds=1))

    status = wait_final(scheduler, job_id)[job_id]

    assert status.state is JobState.TIMEOUT
    assert status.reason is not None and "time limit" in status.reason


def test_a_new_scheduler_on_the_same_root_sees_and_controls_everything(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    done_id = scheduler.submit(jobs.request(script("exit 0")))
    failed_id = scheduler.submit(jobs.request(script("exit 5")))
    wait_final(scheduler, done_id)
    wait_final(scheduler, failed_id)
    running_id, pgid = started_sleeper(scheduler, jobs)
    ids = [done_id, failed_id, running_id]

    before = scheduler.status(ids)
    restarted = LocalScheduler("laptop", scheduler.root, slots=2)
    after = restarted.status(ids)

    def summary(statuses: dict[str, JobStatus]) -> dict[str, object]:
        return {k: (s.state, s.exit_code, s.name, s.started, s.ended) for k, s in statuses.items()}

    assert summary(after) == summary(before)
    assert after[running_id].state is JobState.RUNNING

    restarted.cancel([running_id])
    assert scheduler.status([running_id])[running_id].state is JobState.CANCELLED
    wait_for(lambda: not live_group_members(pgid), "the job's process group to be gone")
    next_id = restarted.submit(jobs.request(script("true")))
    assert int(next_id) == int(running_id) + 1


def test_a_killed_runner_is_reported_as_node_fail_and_its_job_stopped(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    job_id, pgid = started_sleeper(scheduler, jobs)
    jobdir = jobs_dir(scheduler.state_dir) / job_id
    runner_pid = read_task(jobdir, 0).runner_pid
    assert runner_pid is not None

    os.kill(runner_pid, signal.SIGKILL)

    status = wait_state(scheduler, job_id, JobState.NODE_FAIL)
    assert status.reason == "local runner vanished"
    wait_for(lambda: not live_group_members(pgid), "the orphaned job to be stopped")
    # The verdict is recorded, so it does not depend on who looks next.
    assert LocalScheduler("laptop", scheduler.root).status([job_id])[job_id] == status


def test_unknown_ids_are_absent_and_damaged_state_is_unknown(
    scheduler: LocalScheduler, jobs: Jobs
) -> None:
    job_id = scheduler.submit(jobs.request(script("true")))
    wait_final(scheduler, job_id)
    task_state_path(jobs_dir(scheduler.state_dir) / job_id, 0).write_text("{not json")

    statuses = scheduler.status([job_id, "999", "999_1", f"{job_id}_0", "nonsense", ""])

    assert list(statuses) == [job_id]
    assert statuses[job_id].state is JobState.UNKNOWN
    reason = statuses[job_id].reason
    assert reason is not None and "malformed" in reason


def test_gpu_hours_follow_elapsed_time(scheduler: LocalScheduler, jobs: Jobs) -> None:
    job_id = scheduler.submit(jobs.request(script("sleep 0.2"), gpus=2))

    status = wait_final(scheduler, job_id)[job_id]

    assert status.elapsed_seconds is not None and status.elapsed_seconds > 0
    assert status.gpu_hours == pytest.approx(2 * status.elapsed_seconds / 3600)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"log_dir": "relative/logs"}, "absolute"),
        ({"after_ok": ("424242",)}, "unknown job"),
        ({"env": {"NOT-A-NAME": "x"}}, "invalid environment variable name"),
        ({"tasks": ()}, "no tasks"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(
    scheduler: LocalScheduler, jobs: Jobs, change: dict[str, Any], problem: str
) -> None:
    request = jobs.request(script("touch ran"))
    bad = dataclasses.replace(request, **change)

    with pytest.raises(SchedulerError, match=problem) as caught:
        scheduler.submit(bad)

    assert not caught.value.transient
    assert not jobs_dir(scheduler.state_dir).exists() or not any(
        jobs_dir(scheduler.state_dir).iterdir()
    )
