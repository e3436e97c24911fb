"""The Prefect API of the embedded default: a server started only when a flow is about
to run, and kept for the next CLI calls of the same home until it is idle
(HPCFLEET_PREFECT_IDLE_SECONDS, default 600; 0: one temporary server per process,
stopped when it exits). `flows.prefect_keeper` keeps it.

Prefect would start the same server itself (`SubprocessASGIServer`: uvicorn serving
`prefect.server.api.server:create_app`), but only after importing that server module
into the calling process too, which costs seconds of CPU for nothing. Here the server
starts before this process imports Prefect, so both start up at the same time on two
cores, and the caller's only import of Prefect is the client's. With PREFECT_API_URL
set (the control plane) nothing is started.

Standard library only: it must run before Prefect is imported.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from registry.errors import HpcfleetError
from registry.owner_only import private_dir, private_file

if TYPE_CHECKING:
    from flows.prefect_keeper import KeptServer

_STOP_GRACE_SECONDS = 5.0
# Prefect's settings (and their legacy names) that the marker of a migrated default
# database must not override.
_MIGRATE_SETTINGS = (
    "PREFECT_SERVER_DATABASE_MIGRATE_ON_START",
    "PREFECT_API_DATABASE_MIGRATE_ON_START",
)
_DATABASE_SETTINGS = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)
# Loopback only: never let a proxy from the environment see these requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrefectApiError(HpcfleetError):
    """The temporary Prefect server did not start."""


class EphemeralApi:
    """A Prefect server in a child process, on a free port of 127.0.0.1."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.migrates = True  # whether this start checks the database's schema

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the server process; `wait_ready()` waits until it answers."""
        self.port = _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env, self.migrates = server_env(os.environ)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                server_command(self.port), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the server answers; by default as long as Prefect would wait
        (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)."""
        if timeout is None:
            timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise PrefectApiError(f"the temporary Prefect server exited; see {self.log_path}")
            if _answers(f"{self.url}/health"):
                if self.migrates:
                    _mark_migrated(os.environ)
                return
            time.sleep(0.1)
        self.stop()
        raise PrefectApiError(
            f"the temporary Prefect server did not answer within {timeout:.0f} s; "
            f"see {self.log_path}",
            transient=True,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class KeptApi(EphemeralApi):
    """The kept server of a home (`flows.prefect_keeper`): reused when one is alive for
    the same Prefect and settings, else started; used by this process until it exits."""

    def __init__(self, directory: Path, idle: float) -> None:
        super().__init__(directory / "ephemeral-server.log")
        self.directory = directory
        self.idle = idle
        self.server: KeptServer | None = None
        self._users: IO[str] | None = None

    def start(self) -> None:
        from flows import prefect_keeper as keeper

        private_dir(self.directory)
        # Held until this process exits: the keeper does not stop a server in use.
        self._users = private_file(self.directory / keeper.USERS_FILE).open("a")
        fcntl.flock(self._users, fcntl.LOCK_SH)
        os.utime(self.directory / keeper.USERS_FILE)
        env, migrates = server_env(os.environ)
        fingerprint = _fingerprint(os.environ)
        with keeper.state_lock(self.directory):
            kept = keeper.read_state(self.directory)
            if (
                kept is not None
                and kept.fingerprint == fingerprint
                and kept.alive()
                and _answers(f"http://127.0.0.1:{kept.port}/api/health")
            ):
                self.server, self.port, self.migrates = kept, kept.port, False
                return
            self.port = _free_port()
            pid = keeper.start_keeper(self.directory, self.port, self.idle, env, self.log_path)
            self.server = keeper.KeptServer(
                pid, keeper.keeper_start_ticks(pid), self.port, fingerprint
            )
            self.migrates = migrates
            keeper.write_state(self.directory, self.server)

    def running(self) -> bool:
        return self.server is not None and self.server.alive()

    def stop(self) -> None:
        """Leave the server to its keeper; this process's use of it ends now."""
        users, self._users = self._users, None
        if users is not None:
            os.utime(users.fileno())  # the last use: the idle time counts from here
            users.close()


def idle_seconds(environ: Mapping[str, str]) -> float:
    """HPCFLEET_PREFECT_IDLE_SECONDS: how long an unused kept server lives (0: not kept)."""
    value = environ.get("HPCFLEET_PREFECT_IDLE_SECONDS", str(DEFAULT_IDLE_SECONDS))
    try:
        idle = float(value)
    except ValueError:
        raise PrefectApiError(
            f"HPCFLEET_PREFECT_IDLE_SECONDS: {value!r} is not a number of seconds "
            "(0: a temporary server per process)"
        ) from None
    if idle < 0:
        raise PrefectApiError(f"HPCFLEET_PREFECT_IDLE_SECONDS: {value!r} is negative")
    return idle


def server_env(environ: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The server's environment, and whether its start checks the database's schema."""
    env = {
        **environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    migrates = not any(name in env for name in _MIGRATE_SETTINGS)
    if migrates and _migrated(env):
        env[_MIGRATE_SETTINGS[0]] = "false"
        migrates = False
    return env, migrates


def _fingerprint(environ: Mapping[str, str]) -> str:
    """What a kept server must share with this process to serve it: the interpreter,
    Prefect's version and every Prefect setting of the environment."""
    settings = sorted(
        (name, value)
        for name, value in environ.items()
        if name.startswith("PREFECT_") and name != "PREFECT_API_URL"
    )
    text = json.dumps([sys.executable, _prefect_version(), settings])
    return hashlib.sha256(text.encode()).hexdigest()


def server_command(port: int) -> list[str]:
    """The command Prefect itself runs for its temporary server (without the UI)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def _database(environ: Mapping[str, str]) -> Path | None:
    """Prefect's default SQLite database, or None when a database URL is configured."""
    if any(name in environ for name in _DATABASE_SETTINGS):
        return None
    return Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "prefect.db"


def _marker(database: Path) -> Path:
    return database.with_name(f"{database.name}.hpcfleet-migrated")


def _migrated(environ: Mapping[str, str]) -> bool:
    """Whether this Prefect version already migrated the default database.

    A server start otherwise walks Prefect's whole alembic history each time.
    """
    database = _database(environ)
    if database is None or not database.exists():
        return False
    marker = _marker(database)
    return marker.exists() and marker.read_text().strip() == _prefect_version()


def _mark_migrated(environ: Mapping[str, str]) -> None:
    database = _database(environ)
    if database is not None and database.exists():
        _marker(database).write_text(_prefect_version() + "\n")


def _prefect_version() -> str:
    from importlib.metadata import version

    return version("prefect")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with _opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


DEFAULT_IDLE_SECONDS = 600
_api: EphemeralApi | None = None
_lock = threading.Lock()


def start_api(home: Path) -> EphemeralApi | None:
    """Start (or reuse) the home's Prefect server, once per process, and point
    PREFECT_API_URL at it for the rest of the process; None when PREFECT_API_URL was set
    already.

    Call it before importing Prefect (which reads its settings once), and call
    `wait_ready()` on the result before the first flow runs.
    """
    global _api
    with _lock:
        if _api is not None:
            return _api
        if os.environ.get("PREFECT_API_URL"):
            return None
        idle = idle_seconds(os.environ)
        if idle > 0:
            _api = KeptApi(home / "prefect", idle)
        else:
            _api = EphemeralApi(home / "prefect" / "ephemeral-server.log")
        _api.start()
        atexit.register(_api.stop)
        os.environ["PREFECT_API_URL"] = _api.url
        if "prefect.context" in sys.modules:  # imported already: make it read the URL
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        return _api
