"""`LoginScheduler` over a `LocalTransport` (hpcfleet running on the login node itself):
the wrapper really runs, with hostile paths that must stay inert, and `login_tasks: 2`
lets two tasks run at once while a third waits."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from registry.states import JobState
from sites.local.transport import LocalTransport
from sites.login.scheduler import LoginScheduler
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec


def request(base: Path, name: str, script: str) -> JobRequest:
    return JobRequest(
        name=name,
        workdir=str(base / "work"),
        tasks=(TaskSpec(script=script),),
        log_dir=str(base / "logs" / name),
        resources=JobResources(time_seconds=60),
        where="login",
    )


def settle(scheduler: LoginScheduler, ids: list[str], until: float = 30) -> dict[str, JobStatus]:
    deadline = time.monotonic() + until
    while True:
        statuses = scheduler.status(ids)
        if all(s.state.is_final for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def test_hostile_paths_stay_paths_and_two_slots_run_two_tasks(tmp_path: Path) -> None:
    base = tmp_path / "it's a $(touch canary) `touch canary2` dir"
    scheduler = LoginScheduler("here", LocalTransport("here"), str(base / "site"), slots=2)
    # Each task records when it ran; the third can only start when one of the others ended.
    script = 'date +%s.%N > "start-$1"; sleep 2; date +%s.%N > "end-$1"'
    ids = [scheduler.submit(request(base, f"task-{i}", f"set -- {i}\n{script}")) for i in range(3)]
    statuses = settle(scheduler, ids)
    assert [statuses[i].state for i in ids] == [JobState.COMPLETED] * 3, statuses
    work = base / "work"
    start = {i: float((work / f"start-{i}").read_text()) for i in range(3)}
    end = {i: float((work / f"end-{i}").read_text()) for i in range(3)}
    first, second, third = sorted(range(3), key=start.__getitem__)
    assert start[second] < end[first]  # two at once
    assert start[third] >= min(end[first], end[second])  # never three
    assert not list(tmp_path.rglob("canary*")) and not Path("canary").exists()
    assert (base / "logs" / "task-0" / "0.out").exists()


def test_a_task_whose_wrapper_was_killed_is_a_node_failure(tmp_path: Path) -> None:
    scheduler = LoginScheduler("here", LocalTransport("here"), str(tmp_path / "site"))
    job_id = scheduler.submit(request(tmp_path, "doomed", "sleep 60"))
    state_file = tmp_path / "site" / ".hpcfleet-login" / "jobs" / job_id / "state"
    fields: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while fields.get("state") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
        fields = dict(line.split("=", 1) for line in state_file.read_text().splitlines())
    assert scheduler.status([job_id])[job_id].state is JobState.RUNNING
    try:
        os.kill(int(fields["runner"]), signal.SIGKILL)
        status = settle(scheduler, [job_id], until=10)[job_id]
        assert (status.state, status.reason) == (JobState.NODE_FAIL, "login runner vanished")
    finally:
        os.killpg(int(fields["pgid"]), signal.SIGKILL)  # nothing supervises it any more
