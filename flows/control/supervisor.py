"""Start, stop and report the pieces of the control plane on this machine.

Each started piece runs in its own session, so that stopping its group stops everything
it started, with a pid file and a log under `$HPCFLEET_HOME/server/`. `prefect` and
`mlflow` can instead be existing services given by URL: they are then only checked.
Readiness is checked over HTTP (`flows.control.readiness`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.control.pieces import Piece, pieces
from flows.control.plan import PIECES, ControlPlaneConfig, Plan, save_plan, write_json
from flows.control.readiness import probe
from registry.errors import HpcfleetError
from registry.owner_only import private_dir
from sites.processes import (
    group_alive,
    is_alive,
    process_start_ticks,
    start_process_group,
    terminate_group,
)

STOP_GRACE_SECONDS = 20.0
_LEFTOVER_GRACE_SECONDS = 5.0  # for what a dead leader left behind
_POLL_SECONDS = 0.5


class ServerError(HpcfleetError):
    """A piece of the control plane did not start, stop or answer."""


# -- pid files ----------------------------------------------------------------------
@dataclass(frozen=True)
class PidRecord:
    pid: int
    start: int | None  # start time of the process in clock ticks, against pid reuse
    started_at: str = ""


def read_pid(server_dir: Path, piece: str) -> PidRecord | None:
    path = server_dir / f"{piece}.pid"
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def is_running(record: PidRecord | None) -> bool:
    return record is not None and is_alive(record.pid, record.start)


# -- start / stop -------------------------------------------------------------------
def start(server_dir: Path, piece: Piece) -> PidRecord:
    """Start `piece` in a new session, logging to server/<name>.log."""
    if piece.port is not None and not port_free(piece.host, piece.port):
        raise ServerError(
            f"cannot start {piece.name}: port {piece.port} is in use; choose another port "
            f"(--{piece.name}-port) or point hpcfleet at the running service"
        )
    log = server_dir / f"{piece.name}.log"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with log.open("ab") as handle:
        handle.write(f"--- {stamp} hpcfleet server: starting {piece.name}\n".encode())
        handle.flush()
        # A daemon: it outlives this command, which never waits for it.
        process = start_process_group(
            piece.command,
            cwd=server_dir,
            env=piece.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            detached=True,
        )
    record = PidRecord(process.pid, process_start_ticks(process.pid), stamp)
    write_json(server_dir / f"{piece.name}.pid", asdict(record))
    return record


def stop(server_dir: Path, piece: str, grace: float = STOP_GRACE_SECONDS) -> PidRecord | None:
    """Stop a started piece and everything in its process group; None if none was."""
    record = read_pid(server_dir, piece)
    if record is None:
        return None
    # The group id is the leader's pid, and a live group is ours even when its leader
    # already exited (see `sites.processes`).
    alive = is_running(record) or group_alive(record.pid)
    if alive and not terminate_group(record.pid, grace):
        raise ServerError(f"{piece} (process group {record.pid}) survived SIGKILL")
    (server_dir / f"{piece}.pid").unlink(missing_ok=True)
    return record


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError:
            return False
    return True


def wait_ready(
    server_dir: Path,
    piece: Piece,
    record: PidRecord | None,
    ready: Callable[[], bool],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if record is not None and not is_running(record):
            raise ServerError(f"{piece.name} exited while starting:\n{log_tail(server_dir, piece)}")
        if time.monotonic() > deadline:
            raise ServerError(
                f"{piece.name} not ready after {timeout:.0f} s:\n{log_tail(server_dir, piece)}"
            )
        time.sleep(_POLL_SECONDS)


def log_tail(server_dir: Path, piece: Piece, lines: int = 8) -> str:
    """The end of a piece's log for an error message, with known secrets masked."""
    try:
        text = (server_dir / f"{piece.name}.log").read_text(errors="replace")
    except FileNotFoundError:
        return "  (no log)"
    tail = "\n".join("  " + line for line in text.splitlines()[-lines:])
    for secret in piece.secrets:
        tail = tail.replace(secret, "***")
    return f"{tail}\n  (log: {server_dir / f'{piece.name}.log'})"


# -- up / down / status -------------------------------------------------------------
@dataclass(frozen=True)
class PieceStatus:
    name: str
    url: str | None
    pid: int | None
    running: bool  # a started process is alive (external pieces: always False)
    external: bool
    ready: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(config: ControlPlaneConfig, plan: Plan) -> list[PieceStatus]:
    result = []
    for name in plan.enabled():
        record = read_pid(config.server_dir, name)
        running = is_running(record)
        external = not plan.started_here(name)
        pid = record.pid if record else None
        ready = (running or external) and probe(name, plan, config, pid)
        result.append(PieceStatus(name, plan.url_of(name), pid, running, external, ready))
    return result


def up(
    config: ControlPlaneConfig,
    plan: Plan,
    *,
    timeout: float = 180.0,
    on_ready: Callable[[str], None] = lambda _name: None,
    after_services: Callable[[], None] = lambda: None,
) -> list[PieceStatus]:
    """Start what is not running yet, wait until each piece answers.

    `prefect` and `mlflow` start together (both are slow: schema migrations); then
    `after_services` runs (the caller deploys the flow), then the worker and the
    dashboard start.
    """
    server_dir = config.server_dir
    private_dir(server_dir)  # logs, pid files and the server's own stores
    save_plan(server_dir, plan)
    specs = pieces(config, plan)
    enabled = plan.enabled()
    for group in (("prefect", "mlflow"), ("worker", "dashboard")):
        names = [n for n in group if n in enabled]
        records = {n: _ensure_started(server_dir, plan, specs[n]) for n in names}
        for name in names:
            record = records[name]

            def ready(name: str = name, record: PidRecord | None = record) -> bool:
                return probe(name, plan, config, record.pid if record else None)

            wait_ready(server_dir, specs[name], record, ready, timeout)
            on_ready(name)
        if group[0] == "prefect":
            after_services()
    return status(config, plan)


def _ensure_started(server_dir: Path, plan: Plan, piece: Piece) -> PidRecord | None:
    if not plan.started_here(piece.name):
        return None
    record = read_pid(server_dir, piece.name)
    if is_running(record):
        return record
    if record is not None:
        stop(server_dir, piece.name, grace=_LEFTOVER_GRACE_SECONDS)  # a dead leader's leftovers
    return start(server_dir, piece)


def down(config: ControlPlaneConfig) -> list[tuple[str, PidRecord]]:
    """Stop every piece this machine started, last started first."""
    stopped = []
    for name in reversed(PIECES):
        record = stop(config.server_dir, name)
        if record is not None:
            stopped.append((name, record))
    return stopped
