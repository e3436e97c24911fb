"""The command of each piece of the control plane: what `server up` starts.

Pieces, in start order: `prefect` (Prefect server), `mlflow` (MLflow tracking server),
`worker` (a Prefect worker of the hpcfleet pool; it resumes orphaned runs first, see
`flows.deployment`) and `dashboard` (Streamlit).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field

from flows.control import environment
from flows.control.environment import CODE_ROOT
from flows.control.plan import ControlPlaneConfig, Plan


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


def commands(plan: Plan) -> dict[str, list[str]]:
    """The command line of every piece (no secret ever goes on one)."""
    host = plan.host
    return {
        "prefect": [
            *_python_tool("prefect"),
            *("server", "start", "--host", host, "--port", str(plan.prefect_port)),
        ],
        "mlflow": [
            *_python_tool("mlflow"),
            *("server", "--host", host, "--port", str(plan.mlflow_port)),
            *("--workers", str(plan.mlflow_workers)),
        ],
        "worker": [*_python_tool("hpcfleet"), "server", "worker"],
        "dashboard": [
            *_python_tool("streamlit"),
            *("run", str(CODE_ROOT / "dashboard" / "app.py")),
            *("--server.port", str(plan.dashboard_port), "--server.address", host),
            *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
        ],
    }


def pieces(config: ControlPlaneConfig, plan: Plan) -> dict[str, Piece]:
    """The command and environment of every piece this plan starts here."""
    ports = {
        "prefect": plan.prefect_port,
        "mlflow": plan.mlflow_port,
        "worker": None,
        "dashboard": plan.dashboard_port,
    }
    secrets = environment.secrets_of(config)
    return {
        name: Piece(
            name,
            command,
            environment.for_piece(name, config, plan),
            plan.host,
            ports[name],
            secrets,
        )
        for name, command in commands(plan).items()
    }


def worker_name(pid: int) -> str:
    """The name the worker registers under (its pid survives the exec into Prefect)."""
    return f"hpcfleet@{socket.gethostname()}:{pid}"


def worker_command(config: ControlPlaneConfig) -> list[str]:
    """What `hpcfleet server worker` becomes once orphaned runs are resumed."""
    return [
        *_python_tool("prefect"),
        "worker",
        "start",
        "--pool",
        config.work_pool,
        "--type",
        "process",
        "--name",
        worker_name(os.getpid()),
    ]
