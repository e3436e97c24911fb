"""What `hpcfleet server up` runs where, and the settings the supervisor needs."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

# The pieces of the control plane, in start order.
PIECES = ("prefect", "mlflow", "worker", "dashboard")


@dataclass(frozen=True)
class ControlPlaneConfig:
    """The settings (`hpcfleet.settings.Settings`) the control plane's supervisor reads.

    Database URLs may carry passwords: they only ever reach a piece's environment.
    """

    home: Path
    store_url: str  # the registry
    work_pool: str = "hpcfleet"
    prefect_database_url: str | None = None
    mlflow_database_url: str | None = None
    mlflow_artifacts: str | None = None  # s3://bucket/prefix or a directory

    @property
    def server_dir(self) -> Path:
        """Pid files, logs and local state of `hpcfleet server`."""
        return self.home / "server"


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

    def url_of(self, piece: str) -> str | None:
        return {
            "prefect": self.prefect_api,
            "mlflow": self.mlflow_uri,
            "dashboard": self.dashboard_url,
        }.get(piece)


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
    write_json(server_dir / "plan.json", asdict(plan))


def write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically with `data` as JSON."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
