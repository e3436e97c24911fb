"""`sites.processes` on real processes: identity by pid and start time, zombies count as
dead, a group is stopped whole (SIGTERM, then SIGKILL for one that ignores it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sites.processes import (
    child_has_exited,
    group_alive,
    group_members,
    is_alive,
    process_start_ticks,
    reap,
    signal_group,
    signal_process,
    start_process_group,
    terminate_group,
)
from tests.helpers import wait_until

# A shell that starts a grandchild in its own group and prints the grandchild's pid.
FAMILY = "sleep 300 & echo $!; wait"
STUBBORN = "trap '' TERM; echo ready; while :; do sleep 0.1; done"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; their groups are killed and reaped afterwards."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start(
    started: list[subprocess.Popen[bytes]], script: str, *, new_session: bool = True
) -> subprocess.Popen[bytes]:
    process = start_process_group(
        ["bash", "-c", script], stdout=subprocess.PIPE, new_session=new_session
    )
    started.append(process)
    return process


def test_a_started_process_leads_its_own_group_in_a_new_session(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = start(started, FAMILY)
    assert os.getpgid(process.pid) == process.pid != os.getpgid(0)
    assert os.getsid(process.pid) == process.pid
    assert process.stdout is not None
    grandchild = int(process.stdout.readline())
    assert sorted(group_members(process.pid)) == sorted([process.pid, grandchild])


def test_a_group_can_stay_in_our_session(started: list[subprocess.Popen[bytes]]) -> None:
    process = start(started, FAMILY, new_session=False)
    assert os.getpgid(process.pid) == process.pid
    assert os.getsid(process.pid) == os.getsid(0)


def test_identity_is_pid_and_start_time(started: list[subprocess.Popen[bytes]]) -> None:
    process = start(started, "sleep 300")
    ticks = process_start_ticks(process.pid)
    assert ticks is not None and is_alive(process.pid, ticks)
    # The same pid with another start time is another process (the pid was reused).
    assert not is_alive(process.pid, ticks + 1)
    assert not signal_process(process.pid, ticks + 1, signal.SIGKILL)
    assert not signal_group(process.pid, ticks + 1, signal.SIGKILL)
    assert process.poll() is None
    assert not is_alive(None, ticks) and not is_alive(process.pid, None)


def test_a_zombie_counts_as_dead(started: list[subprocess.Popen[bytes]]) -> None:
    process = start(started, "exit 3")
    ticks = process_start_ticks(os.getpid())  # ours, to compare with: we are alive
    assert ticks is not None and is_alive(os.getpid(), ticks)
    wait_until(lambda: child_has_exited(process.pid), timeout=10, interval=0.05)
    # Exited but not reaped: the pid is still there, as a zombie.
    assert Path(f"/proc/{process.pid}").exists()
    assert process_start_ticks(process.pid) is None
    assert not group_alive(process.pid)
    assert reap(process.pid)
    assert reap(process.pid)  # not our child any more: nothing left to collect
    started.remove(process)


def test_terminate_group_stops_children_the_leader_left_behind(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = start(started, FAMILY)
    assert process.stdout is not None
    grandchild = int(process.stdout.readline())
    assert terminate_group(process.pid, grace=10.0)
    assert group_members(process.pid) == []
    assert process_start_ticks(grandchild) is None
    assert process.wait() == -signal.SIGTERM


def test_terminate_group_kills_what_ignores_sigterm_after_the_grace(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = start(started, STUBBORN)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    assert terminate_group(process.pid, grace=0.5)
    assert process.wait() == -signal.SIGKILL


def test_terminate_group_of_a_gone_group_is_a_no_op(
    started: list[subprocess.Popen[bytes]],
) -> None:
    process = start(started, "true")
    process.wait()
    assert terminate_group(process.pid, grace=0.1)


def test_a_detached_process_does_not_warn_when_forgotten(tmp_path: Path) -> None:
    """Forgetting the object of a runner that outlives it must stay silent."""
    code = (
        "import gc, warnings; warnings.simplefilter('error');"
        "from sites.processes import start_process_group;"
        "p = start_process_group(['sleep', '0.2'], detached=True); pid = p.pid;"
        "del p; gc.collect(); print(pid)"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=30,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
