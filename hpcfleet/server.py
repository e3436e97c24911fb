"""The control plane on one machine: start, stop and report its pieces.

Pieces, in start order: `prefect` (Prefect server), `mlflow` (MLflow tracking server),
`worker` (a Prefect worker of the hpcfleet pool; it resumes orphaned runs first, see
`flows.deployment`) and `dashboard` (Streamlit). Each started piece runs in its own
session, so that stopping its group stops everything it started, with a pid file and a
log under `$HPCFLEET_HOME/server/`. `prefect` and `mlflow` can instead be existing
services given by URL: they are then only checked. Readiness is checked over HTTP.

Secrets (database passwords, S3 keys) reach the pieces through their environment only:
never on a command line (anyone can read those in `ps`), in a pid file or in our logs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hpcfleet.settings import Settings
from registry.errors import HpcfleetError
from registry.owner_only import private_dir
from sites.local.runner import process_start_ticks

PIECES = ("prefect", "mlflow", "worker", "dashboard")
CODE_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 20.0


class ServerError(HpcfleetError):
    """A piece of the control plane did not start, stop or answer."""


@dataclass(frozen=True)
class Plan:
    """What `server up` runs where; kept in server/plan.json so that the next `up`
    (e.g. to restart a dead worker) and `status` use the same ports."""

    host: str = "127.0.0.1"  # where started pieces listen
    prefect_port: int = 4200
    mlflow_port: int = 5000
    dashboard_port: int = 8501
    prefect_url: str | None = None  # an existing Prefect API (…/api): not started here
    mlflow_url: str | None = None  # an existing MLflow server: not started here
    worker: bool = True
    dashboard: bool = True
    prefect_ui: bool = True
    mlflow_workers: int = 2

    @property
    def _local(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def prefect_api(self) -> str:
        return (self.prefect_url or f"http://{self._local}:{self.prefect_port}/api").rstrip("/")

    @property
    def mlflow_uri(self) -> str:
        return (self.mlflow_url or f"http://{self._local}:{self.mlflow_port}").rstrip("/")

    @property
    def dashboard_url(self) -> str:
        return f"http://{self._local}:{self.dashboard_port}"

    def enabled(self) -> list[str]:
        off = {"worker": not self.worker, "dashboard": not self.dashboard}
        return [piece for piece in PIECES if not off.get(piece)]

    def started_here(self, piece: str) -> bool:
        external = {"prefect": self.prefect_url, "mlflow": self.mlflow_url}.get(piece)
        return piece in self.enabled() and external is None


def load_plan(server_dir: Path, **overrides: Any) -> Plan:
    """The saved plan with the given (non-None) overrides."""
    saved: dict[str, Any] = {}
    path = server_dir / "plan.json"
    if path.exists():
        names = {f.name for f in fields(Plan)}
        saved = {k: v for k, v in json.loads(path.read_text()).items() if k in names}
    plan = Plan(**saved)
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def save_plan(server_dir: Path, plan: Plan) -> None:
    _write_json(server_dir / "plan.json", asdict(plan))


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
    return record is not None and process_start_ticks(record.pid) == record.start


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited while we looked
        # After the command name: state, ppid, pgrp (proc(5)).
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# -- pieces -------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    name: str
    command: list[str]
    env: dict[str, str]
    host: str
    port: int | None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # to mask in error messages


def _python_tool(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _base_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["HPCFLEET_HOME"] = str(settings.home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), env.get("PYTHONPATH")]))
    return env


def password_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    return make_url(url).password


def pieces(settings: Settings, plan: Plan) -> dict[str, Piece]:
    """The command and environment of every piece this plan starts here."""
    server_dir, host = settings.server_dir, plan.host
    secrets = tuple(
        filter(
            None,
            (
                password_of(u)
                for u in (
                    settings.database_url,
                    settings.prefect_database_url,
                    settings.mlflow_database_url,
                )
            ),
        )
    ) + tuple(filter(None, [os.environ.get("AWS_SECRET_ACCESS_KEY")]))
    result: dict[str, Piece] = {}

    env = _base_env(settings)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(server_dir / "prefect")
    env["PREFECT_UI_ENABLED"] = "true" if plan.prefect_ui else "false"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if settings.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    result["prefect"] = Piece(
        "prefect",
        [
            *_python_tool("prefect"),
            "server",
            "start",
            "--host",
            host,
            "--port",
            str(plan.prefect_port),
        ],
        env,
        host,
        plan.prefect_port,
        secrets,
    )

    env = _base_env(settings)
    env["MLFLOW_BACKEND_STORE_URI"] = (
        settings.mlflow_database_url or f"sqlite:///{server_dir / 'mlflow.db'}"
    )
    env["MLFLOW_ARTIFACTS_DESTINATION"] = settings.mlflow_artifacts or str(
        server_dir / "mlartifacts"
    )
    # MLflow's job runner (GenAI evaluation jobs) is a dozen processes hpcfleet never uses.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    result["mlflow"] = Piece(
        "mlflow",
        [
            *_python_tool("mlflow"),
            "server",
            "--host",
            host,
            "--port",
            str(plan.mlflow_port),
            "--workers",
            str(plan.mlflow_workers),
        ],
        env,
        host,
        plan.mlflow_port,
        secrets,
    )

    env = _base_env(settings)
    env.update(PREFECT_API_URL=plan.prefect_api, MLFLOW_TRACKING_URI=plan.mlflow_uri)
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    result["worker"] = Piece(
        "worker",
        [*_python_tool("hpcfleet"), "server", "worker"],
        env,
        host,
        None,
        secrets,
    )

    env = _base_env(settings)
    env.update(PREFECT_API_URL=plan.prefect_api, MLFLOW_TRACKING_URI=plan.mlflow_uri)
    env.setdefault("MLFLOW_UI_URL", plan.mlflow_uri)
    result["dashboard"] = Piece(
        "dashboard",
        [
            *_python_tool("streamlit"),
            "run",
            str(CODE_ROOT / "dashboard" / "app.py"),
            "--server.port",
            str(plan.dashboard_port),
            "--server.address",
            host,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        env,
        host,
        plan.dashboard_port,
        secrets,
    )
    return result


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
        process = subprocess.Popen(
            piece.command,
            env=piece.env,
            cwd=server_dir,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = PidRecord(process.pid, process_start_ticks(process.pid), stamp)
    _write_json(server_dir / f"{piece.name}.pid", asdict(record))
    return record


def stop(server_dir: Path, piece: str, grace: float = STOP_GRACE_SECONDS) -> PidRecord | None:
    """Stop a started piece and everything in its process group; None if none was."""
    record = read_pid(server_dir, piece)
    if record is None:
        return None
    # The group id is the leader's pid; Linux does not reuse a pid while it names a live
    # group, so a live group is ours even when its leader already exited.
    if is_running(record) or _group_alive(record.pid):
        _signal_group(record.pid, signal.SIGTERM)
        if not _wait_gone(record.pid, grace):
            _signal_group(record.pid, signal.SIGKILL)
            if not _wait_gone(record.pid, 5.0):
                raise ServerError(f"{piece} (process group {record.pid}) survived SIGKILL")
    (server_dir / f"{piece}.pid").unlink(missing_ok=True)
    return record


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# -- readiness ----------------------------------------------------------------------
def http_get(
    url: str, *, body: Mapping[str, Any] | None = None, timeout: float = 3.0
) -> bytes | None:
    """The body of a 2xx answer to GET (or POST of JSON `body`); None otherwise."""
    headers = {"Accept": "application/json"}
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth and "/api/" in url:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read()  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, ValueError):
        return None


def worker_name(pid: int) -> str:
    """The name the worker registers under (its pid survives the exec into Prefect)."""
    return f"hpcfleet@{socket.gethostname()}:{pid}"


def probe(piece: str, plan: Plan, settings: Settings, record: PidRecord | None) -> bool:
    """Whether `piece` answers (the worker: whether it has registered with its pool)."""
    if piece == "prefect":
        return http_get(f"{plan.prefect_api}/health") is not None
    if piece == "mlflow":
        return http_get(f"{plan.mlflow_uri}/health") is not None
    if piece == "dashboard":
        return http_get(f"{plan.dashboard_url}/_stcore/health") is not None
    if record is None:
        return False
    answer = http_get(f"{plan.prefect_api}/work_pools/{settings.work_pool}/workers/filter", body={})
    try:
        workers = json.loads(answer) if answer else []
    except ValueError:
        return False
    return any(
        w.get("name") == worker_name(record.pid) and w.get("status") == "ONLINE" for w in workers
    )


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
        time.sleep(0.5)


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


def url_of(piece: str, plan: Plan) -> str | None:
    return {
        "prefect": plan.prefect_api,
        "mlflow": plan.mlflow_uri,
        "dashboard": plan.dashboard_url,
    }.get(piece)


def status(settings: Settings, plan: Plan) -> list[PieceStatus]:
    result = []
    for name in plan.enabled():
        record = read_pid(settings.server_dir, name)
        running = is_running(record)
        external = not plan.started_here(name)
        ready = (running or external) and probe(name, plan, settings, record)
        result.append(
            PieceStatus(
                name, url_of(name, plan), record.pid if record else None, running, external, ready
            )
        )
    return result


def up(
    settings: Settings,
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
    server_dir = settings.server_dir
    private_dir(server_dir)  # logs, pid files and the server's own stores
    save_plan(server_dir, plan)
    specs = pieces(settings, plan)
    enabled = plan.enabled()
    for group in (("prefect", "mlflow"), ("worker", "dashboard")):
        names = [n for n in group if n in enabled]
        records = {n: _ensure_started(server_dir, plan, specs[n]) for n in names}
        for name in names:
            record = records[name]

            def ready(name: str = name, record: PidRecord | None = record) -> bool:
                return probe(name, plan, settings, record)

            wait_ready(server_dir, specs[name], record, ready, timeout)
            on_ready(name)
        if group[0] == "prefect":
            after_services()
    return status(settings, plan)


def _ensure_started(server_dir: Path, plan: Plan, piece: Piece) -> PidRecord | None:
    if not plan.started_here(piece.name):
        return None
    record = read_pid(server_dir, piece.name)
    if is_running(record):
        return record
    if record is not None:
        stop(server_dir, piece.name, grace=5.0)  # leftovers of a leader that died
    return start(server_dir, piece)


def down(settings: Settings) -> list[tuple[str, PidRecord]]:
    """Stop every piece this machine started, last started first."""
    stopped = []
    for name in reversed(PIECES):
        record = stop(settings.server_dir, name)
        if record is not None:
            stopped.append((name, record))
    return stopped


def worker_exec_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: the deployment passes the registry URL without its
    password, so flow runs find it in PGPASSWORD (libpq's own variable)."""
    env = dict(os.environ)
    password = password_of(settings.database_url)
    if password is not None and make_url(settings.store_url).get_backend_name() == "postgresql":
        env["PGPASSWORD"] = password
    return env


def worker_command(settings: Settings) -> list[str]:
    return [
        *_python_tool("prefect"),
        "worker",
        "start",
        "--pool",
        settings.work_pool,
        "--type",
        "process",
        "--name",
        worker_name(os.getpid()),
    ]
