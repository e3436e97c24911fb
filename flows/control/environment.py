"""Which environment each piece of the control plane gets.

Secrets (database passwords, S3 keys) reach the pieces through their environment only:
never on a command line (anyone can read those in `ps`), in a pid file or in our logs.
Each piece starts from this process's environment without any credential
(`without_credentials`), with `HPCFLEET_HOME` and the code on `PYTHONPATH`, plus what it
alone needs: Prefect its database URL; MLflow its database URL and the S3 credentials;
the worker and the dashboard the registry URL. No piece gets them all, so a piece that
is broken into gives away only its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from flows.control.plan import ControlPlaneConfig, Plan

# The directory that holds `hpcfleet`, `flows`, `dashboard`…: every piece imports from it.
CODE_ROOT = Path(__file__).resolve().parents[2]


def password_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    return make_url(url).password


def secrets_of(config: ControlPlaneConfig) -> tuple[str, ...]:
    """Every secret a piece's environment may hold: to mask in what we print."""
    urls = (config.store_url, config.prefect_database_url, config.mlflow_database_url)
    passwords = tuple(filter(None, (password_of(url) for url in urls)))
    return passwords + tuple(filter(None, [os.environ.get("AWS_SECRET_ACCESS_KEY")]))


# Variables that hold a credential or a URL that may carry one, given only to the piece
# that needs them; and the prefix of the S3 (boto3) credentials, profiles and files.
CREDENTIAL_VARIABLES = frozenset(
    {
        "HPCFLEET_DATABASE_URL",
        "HPCFLEET_PREFECT_DATABASE_URL",
        "HPCFLEET_MLFLOW_DATABASE_URL",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_API_DATABASE_PASSWORD",
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "PGPASSWORD",
    }
)
S3_PREFIX = "AWS_"
# Set in the worker's environment only: its flow runs refuse `scheduler: local` sites,
# which would run partners' jobs on the control plane's own machine.
CONTROL_PLANE_VARIABLE = "HPCFLEET_CONTROL_PLANE"


def without_credentials(environ: dict[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if name not in CREDENTIAL_VARIABLES
        and not name.startswith(S3_PREFIX)
        and name != CONTROL_PLANE_VARIABLE
    }


def s3_credentials(environ: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name.startswith(S3_PREFIX)}


def base_env(config: ControlPlaneConfig) -> dict[str, str]:
    env = without_credentials(dict(os.environ))
    env["HPCFLEET_HOME"] = str(config.home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), env.get("PYTHONPATH")]))
    return env


def prefect_env(config: ControlPlaneConfig, plan: Plan) -> dict[str, str]:
    """The Prefect server: its own home and database, never another Prefect's API."""
    env = base_env(config)
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(config.server_dir / "prefect")
    env["PREFECT_UI_ENABLED"] = "true" if plan.prefect_ui else "false"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if config.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_database_url
    return env


def mlflow_env(config: ControlPlaneConfig) -> dict[str, str]:
    """The MLflow server: its backend store and where artifacts go."""
    env = base_env(config)
    env.update(s3_credentials(dict(os.environ)))
    env["MLFLOW_BACKEND_STORE_URI"] = (
        config.mlflow_database_url or f"sqlite:///{config.server_dir / 'mlflow.db'}"
    )
    env["MLFLOW_ARTIFACTS_DESTINATION"] = config.mlflow_artifacts or str(
        config.server_dir / "mlartifacts"
    )
    # MLflow's job runner (GenAI evaluation jobs) is a dozen processes hpcfleet never uses.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def worker_env(config: ControlPlaneConfig, plan: Plan) -> dict[str, str]:
    """The worker (`hpcfleet server worker`, and the flow runs it starts): the registry,
    the plan's Prefect API and MLflow (which stores artifacts itself: no S3 key here)."""
    env = base_env(config)
    env.update(
        HPCFLEET_DATABASE_URL=config.store_url,
        PREFECT_API_URL=plan.prefect_api,
        MLFLOW_TRACKING_URI=plan.mlflow_uri,
    )
    env[CONTROL_PLANE_VARIABLE] = "1"
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    return env


def dashboard_env(config: ControlPlaneConfig, plan: Plan) -> dict[str, str]:
    """The dashboard: reads the registry, the plan's Prefect and MLflow, links to
    MLflow's UI."""
    env = base_env(config)
    env.update(
        HPCFLEET_DATABASE_URL=config.store_url,
        PREFECT_API_URL=plan.prefect_api,
        MLFLOW_TRACKING_URI=plan.mlflow_uri,
    )
    env.setdefault("MLFLOW_UI_URL", plan.mlflow_uri)
    return env


def for_piece(name: str, config: ControlPlaneConfig, plan: Plan) -> dict[str, str]:
    """The environment of piece `name` (see `flows.control.plan.PIECES`)."""
    if name == "prefect":
        return prefect_env(config, plan)
    if name == "mlflow":
        return mlflow_env(config)
    if name == "worker":
        return worker_env(config, plan)
    return dashboard_env(config, plan)
