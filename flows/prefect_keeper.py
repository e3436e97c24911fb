"""The kept Prefect server of the embedded default: started by the first CLI call of a
home that runs a flow, reused by the next ones, stopped once nobody used it for a while.

Starting Prefect's server costs ~4 s of CPU, as much as a small run's jobs; a user who
launches one run after another pays it once. `python -m flows.prefect_keeper STATE PORT
IDLE` runs the server (`prefect_api.server_command`, loopback only) as its child and,
once a second, stops it and exits when:
- the server exited;
- STATE no longer names this keeper (the home was removed, or another keeper took over
  with other settings);
- no process holds the users file (a shared `flock` for as long as a process uses the
  server) and its modification time, the last use, is IDLE seconds old.

Files under $HPCFLEET_HOME/prefect, owner-only:
    kept-server.json    the keeper's pid and start time, the port, the settings' fingerprint
    kept-server.lock    exclusive while a process reads or changes kept-server.json
    kept-server.users   shared-locked by each process using the server

Standard library only (and `sites.processes`, itself standard library only): it runs
before Prefect is imported, and the keeper never imports Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from registry.owner_only import private_file
from sites.processes import is_alive, process_start_ticks

STATE_FILE = "kept-server.json"
LOCK_FILE = "kept-server.lock"
USERS_FILE = "kept-server.users"
CHECK_SECONDS = 1.0
_STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class KeptServer:
    """What kept-server.json says: which keeper serves which port, for which settings."""

    pid: int
    start_ticks: int
    port: int
    fingerprint: str

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_ticks)


def read_state(directory: Path) -> KeptServer | None:
    """The kept server recorded under `directory`, or None (none, or unreadable)."""
    try:
        data = json.loads((directory / STATE_FILE).read_text())
        return KeptServer(
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            port=int(data["port"]),
            fingerprint=str(data["fingerprint"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(directory: Path, server: KeptServer) -> None:
    path = private_file(directory / f"{STATE_FILE}.tmp")
    path.write_text(json.dumps(asdict(server)) + "\n")
    path.replace(directory / STATE_FILE)


def forget_state(directory: Path, pid: int) -> None:
    """Remove the state file if it still names keeper `pid`."""
    state = read_state(directory)
    if state is not None and state.pid == pid:
        (directory / STATE_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def state_lock(directory: Path) -> Iterator[None]:
    """Exclusive use of the state file (between CLI calls and the keeper)."""
    with private_file(directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def in_use(directory: Path) -> bool:
    """Whether some process holds the users file (call it holding `state_lock`)."""
    with private_file(directory / USERS_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def still_wanted(directory: Path, started: float, idle: float) -> bool:
    """Whether the keeper should keep serving (see the module docstring)."""
    with state_lock(directory):
        state = read_state(directory)
        if state is None or state.pid != os.getpid():
            return False
        if in_use(directory):
            return True
        last_use = max(started, (directory / USERS_FILE).stat().st_mtime)
        if time.time() - last_use < idle:
            return True
        forget_state(directory, os.getpid())  # no process picks it up any more
        return False


def keep(directory: Path, port: int, idle: float) -> int:
    """Serve on `port` until the server exits or is not wanted any more."""
    from flows.prefect_api import server_command

    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.time()
    server = subprocess.Popen(server_command(port), stdin=subprocess.DEVNULL)
    try:
        while server.poll() is None and not stopping:
            time.sleep(CHECK_SECONDS)
            if not directory.is_dir() or not still_wanted(directory, started, idle):
                break
    finally:
        _stop(server)
        if directory.is_dir():
            with state_lock(directory):
                forget_state(directory, os.getpid())
    return 0


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def start_keeper(directory: Path, port: int, idle: float, env: dict[str, str], log: Path) -> int:
    """Start a keeper in its own session (it outlives this process); returns its pid.
    Call it holding `state_lock`, and record it with `write_state`."""
    command = [sys.executable, "-m", "flows.prefect_keeper", str(directory), str(port), str(idle)]
    # It outlives this command: it keeps none of hpcfleet's or MLflow's settings (URLs
    # that may hold passwords), which Prefect's server does not read.
    env = {k: v for k, v in env.items() if not k.startswith(("HPCFLEET_", "MLFLOW_"))}
    with private_file(log).open("ab") as handle:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
    return process.pid


def keeper_start_ticks(pid: int) -> int:
    ticks = process_start_ticks(pid)
    return -1 if ticks is None else ticks


def main(argv: list[str]) -> int:
    directory, port, idle = Path(argv[0]), int(argv[1]), float(argv[2])
    return keep(directory, port, idle)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
