"""The Prefect API of the embedded default: one temporary server per process, started
only when a flow is about to run.

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

from registry.errors import HpcfleetError

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
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.migrates = not any(name in env for name in _MIGRATE_SETTINGS)
        if self.migrates and _migrated(env):
            env[_MIGRATE_SETTINGS[0]] = "false"
            self.migrates = False
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
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise PrefectApiError(
                    f"the temporary Prefect server exited (code {code}); see {self.log_path}"
                )
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


_api: EphemeralApi | None = None
_lock = threading.Lock()


def start_api(home: Path) -> EphemeralApi | None:
    """Start this process's temporary Prefect server, once, and point PREFECT_API_URL
    at it for the rest of the process; None when PREFECT_API_URL was set already.

    Call it before importing Prefect (which reads its settings once), and call
    `wait_ready()` on the result before the first flow runs.
    """
    global _api
    with _lock:
        if _api is not None:
            return _api
        if os.environ.get("PREFECT_API_URL"):
            return None
        _api = EphemeralApi(home / "prefect" / "ephemeral-server.log")
        _api.start()
        atexit.register(_api.stop)
        os.environ["PREFECT_API_URL"] = _api.url
        if "prefect.context" in sys.modules:  # imported already: make it read the URL
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        return _api
