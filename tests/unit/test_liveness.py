"""`orchestrator_alive`: the one answer to "does a live orchestrator drive this run?",
case by case (the pid checks use real processes of this host)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from flows.control.liveness import STALE_AFTER, orchestrator_alive, orchestrator_id
from registry.records import RunRecord
from registry.runspec import RunSpec
from registry.states import RunState
from registry.store import now

HERE = socket.gethostname()
SPEC = RunSpec.model_validate(
    {"name": "r", "stages": [{"name": "s", "site": "a", "command": ["true"]}]}
)


def run(orchestrator: str | None, heartbeat: datetime | None) -> RunRecord:
    return RunRecord(
        run_id="r1",
        name="r",
        partner="cuni",
        experiment="r",
        state=RunState.RUNNING,
        created=now(),
        orchestrator=orchestrator,
        heartbeat=heartbeat,
        spec=SPEC,
    )


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process of ours that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def zombie_pid() -> Iterator[int]:
    """The pid of a child that has exited but is not reaped yet."""
    process = subprocess.Popen(["true"])
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    yield process.pid
    process.wait()


def test_this_process_on_this_host_with_a_fresh_heartbeat_is_alive() -> None:
    assert orchestrator_id().startswith(f"{HERE}:{os.getpid()}:")
    assert orchestrator_alive(run(orchestrator_id(), now()))
    # An id recorded before start times were: the pid alone decides.
    assert orchestrator_alive(run(f"{HERE}:{os.getpid()}", now()))


def test_a_live_pid_that_started_at_another_time_is_another_process() -> None:
    # The kernel reuses pids: the orchestrator that recorded this id has gone, and the
    # pid now belongs to someone else (here: this test's own process).
    _, pid, start = orchestrator_id().split(":")
    assert not orchestrator_alive(run(f"{HERE}:{pid}:{int(start) + 1}", now()))


def test_no_orchestrator_or_no_heartbeat_is_not_alive() -> None:
    assert not orchestrator_alive(run(None, now()))
    assert not orchestrator_alive(run(orchestrator_id(), None))


def test_a_stale_heartbeat_is_not_alive_even_if_the_process_lives() -> None:
    beat = now()
    assert orchestrator_alive(
        run(orchestrator_id(), beat), at=beat + STALE_AFTER - timedelta(seconds=1)
    )
    assert not orchestrator_alive(run(orchestrator_id(), beat), at=beat + STALE_AFTER)


def test_a_dead_process_on_this_host_is_not_alive_despite_a_fresh_heartbeat(dead_pid: int) -> None:
    assert not orchestrator_alive(run(f"{HERE}:{dead_pid}", now()))


def test_a_zombie_on_this_host_is_not_alive(zombie_pid: int) -> None:
    assert not orchestrator_alive(run(f"{HERE}:{zombie_pid}", now()))


def test_on_another_host_only_the_heartbeat_tells(dead_pid: int) -> None:
    assert orchestrator_alive(run(f"elsewhere.example.org:{dead_pid}", now()))
    assert orchestrator_alive(run(f"{HERE}:{dead_pid}", now()), host="elsewhere.example.org")
    assert not orchestrator_alive(run("elsewhere.example.org:1", now() - STALE_AFTER))


def test_an_orchestrator_without_a_pid_is_judged_by_its_heartbeat() -> None:
    assert orchestrator_alive(run(f"{HERE}:flow-run", now()))
    assert not orchestrator_alive(run(f"{HERE}:flow-run", now() - 2 * STALE_AFTER))
