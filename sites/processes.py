"""Process groups on this machine: start one, tell whether a process is still alive,
signal a group, stop a group. Linux only; standard library only.

A process is identified by its pid *and* its start time in clock ticks after boot
(field 22 of `/proc/<pid>/stat`), so that a pid the kernel reused for another process is
never mistaken for ours. A zombie (exited, not yet reaped) counts as dead. A process
group is named by its leader's pid; Linux does not give that number to a new process
while any member of the group lives, so a live group is ours even once its leader is
gone.

The local job runner imports this module once per job (`python -m sites.local.runner`):
keep it free of anything but the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 5.0  # how long a SIGKILLed group may take to disappear

_DEAD_STATES = ("Z", "X")  # zombie, dead (proc(5))


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    return stat.rpartition(")")[2].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of process `pid` (clock ticks after boot); None if it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in _DEAD_STATES:
        return None
    return int(fields[19])  # field 22 of proc(5)


def is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """Whether `pid` is still the live (not zombie) process that started at `start_ticks`."""
    return pid is not None and start_ticks is not None and process_start_ticks(pid) == start_ticks


def pid_exists(pid: int) -> bool:
    """Whether some live (not zombie) process has pid `pid`, whoever it belongs to.

    Weaker than `is_alive`: use it only where no start time was recorded.
    """
    return process_start_ticks(pid) is not None


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        # After the command name: state, ppid, pgrp (proc(5)).
        if fields and len(fields) > 2 and fields[0] not in _DEAD_STATES and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group `pgid`."""
    return bool(group_members(pgid))


def start_process_group(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    new_session: bool = True,
    detached: bool = False,
    umask: int = -1,
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new process group (its pid is the group id).

    `new_session`: also a new session, without a controlling terminal (a daemon that
    outlives our terminal); otherwise only a new group in our session. `detached`: the
    process outlives the returned object by design, so forgetting that object does not
    warn that it still runs; the caller reaps it (`reap`). `umask`: the child's file
    creation mask (-1: ours). stdin is always /dev/null.
    """
    popen = _DetachedPopen if detached else subprocess.Popen
    return popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        start_new_session=new_session,
        process_group=None if new_session else 0,
        umask=umask,
    )


class _DetachedPopen(subprocess.Popen[bytes]):
    def __del__(self) -> None:
        pass


def reap(pid: int) -> bool:
    """Collect the exit status of our child `pid` if it has exited; True once it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already, or not our child
    return bool(done)


def child_has_exited(pid: int) -> bool:
    """Whether our child `pid` has exited, leaving it unreaped (its pid stays ours)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def signal_process(pid: int | None, start_ticks: int | None, sig: int) -> bool:
    """Send `sig` to `pid` only if it is still the process we recorded; True if sent."""
    if pid is None or not is_alive(pid, start_ticks):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_group(pgid: int | None, leader_start: int | None, sig: int) -> bool:
    """Send `sig` to group `pgid` only if its leader is still the one we recorded."""
    if pgid is None or not is_alive(pgid, leader_start):
        return False
    return signal_own_group(pgid, sig)


def signal_own_group(pgid: int, sig: int) -> bool:
    """Send `sig` to group `pgid` without checking who leads it; True if sent.

    Only for a group known to be ours: the group of an unreaped child of ours, or a
    group with live members whose leader we started (see the module docstring).
    """
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, seconds: float) -> bool:
    """Poll until group `pgid` has no live member or `seconds` pass; True if it is gone."""
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def terminate_group(pgid: int, grace: float, *, kill_wait: float = KILL_WAIT_SECONDS) -> bool:
    """Stop every process of group `pgid`: SIGTERM, then SIGKILL after `grace` seconds.

    Returns True once no live member is left, False if one survived SIGKILL for
    `kill_wait` seconds (stuck in the kernel). A group that is already gone is fine.
    """
    if not group_alive(pgid):
        return True
    signal_own_group(pgid, signal.SIGTERM)
    if wait_group_gone(pgid, grace):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return wait_group_gone(pgid, kill_wait)
