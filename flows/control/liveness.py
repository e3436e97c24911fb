"""Whether a run's orchestrator is alive: the one answer that the engine's claim,
`run cancel`, `run resume` and the worker's recovery of orphaned runs all use."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from registry.records import RunRecord
from registry.store import now
from sites.processes import is_alive, pid_exists, process_start_ticks

HEARTBEAT_SECONDS = 10.0  # how often a live orchestrator records a heartbeat
STALE_AFTER = timedelta(seconds=45)  # a heartbeat this old means nobody drives the run


def orchestrator_id(host: str | None = None, pid: int | None = None) -> str:
    """How a run records who drives it: "host:pid:start" (this process by default),
    where start is the process's start time in clock ticks after boot, so that a pid
    the kernel gave to another process later is not taken for it. Without /proc (not
    Linux) "host:pid"."""
    pid = pid if pid is not None else os.getpid()
    start = process_start_ticks(pid)
    where = f"{host or socket.gethostname()}:{pid}"
    return where if start is None else f"{where}:{start}"


def orchestrator_alive(
    run: RunRecord, *, host: str | None = None, at: datetime | None = None
) -> bool:
    """Whether a live orchestrator drives `run`. Exactly these checks, in this order:

    1. `run.orchestrator` names one ("host:pid:start", see `orchestrator_id`); else not
       alive.
    2. Its heartbeat (`run.heartbeat`) is younger than `STALE_AFTER` at `at` (now by
       default); a missing or older heartbeat means not alive, wherever it ran. A live
       orchestrator beats every `HEARTBEAT_SECONDS`.
    3. If it ran on this host (`host`, default `socket.gethostname()`) and names a pid:
       a process with that pid and that start time (when recorded; an id from before
       start times were recorded has none) exists and is not a zombie; else not alive.
       This sees a killed orchestrator at once instead of after `STALE_AFTER`, and
       a pid reused by another process as dead.

    Not checked: any process on another host (only its heartbeat tells); the Prefect
    flow run's state
    (Prefect may show a flow run RUNNING whose process died; a flow run still queued is
    not an orchestrator: `flows.deployment.flow_run_waiting` asks about that).
    """
    if run.orchestrator is None or run.heartbeat is None:
        return False
    if (at or now()) - run.heartbeat >= STALE_AFTER:
        return False
    # Host names hold no ":" (RFC 952/1123), so the first one ends it.
    orchestrator_host, _, process = run.orchestrator.partition(":")
    pid, _, start = process.partition(":")
    if orchestrator_host != (host or socket.gethostname()) or not pid.isdigit():
        return True
    if start.isdigit():
        return is_alive(int(pid), int(start))
    return pid_exists(int(pid))
