"""Configuration (pydantic-settings, env prefix HPCFLEET_; INTERFACE.md, "Configuration")
and the path rules of the embedded default, in one place for the CLI and the dashboard.

Import-light on purpose: every CLI call reads it, so it imports neither the engine nor
SQLAlchemy, Prefect or MLflow, not even inside a function: the dashboard imports this
module, and import-linter counts every import towards "the dashboard never opens SSH".
Callers build `flows.engine.EngineConfig` from these fields themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = "~/.hpcfleet"


def home_path(value: str | Path | None) -> Path:
    """HPCFLEET_HOME as an absolute path (default ~/.hpcfleet)."""
    return Path(value or DEFAULT_HOME).expanduser().absolute()


def store_url_for(home: Path, database_url: str | None) -> str:
    """HPCFLEET_DATABASE_URL, else the SQLite file registry.db under the home."""
    return database_url or f"sqlite:///{home / 'registry.db'}"


def tracking_uri_for(home: Path, environ: Mapping[str, str]) -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store under the home."""
    return environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def artifact_root_for(home: Path, environ: Mapping[str, str]) -> str | None:
    """Local artifact directory for the embedded default; a tracking server decides its own."""
    if environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (home / "mlartifacts").as_uri()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPCFLEET_", extra="ignore")

    home: Path = Path(DEFAULT_HOME)
    database_url: str | None = None
    partner: str | None = None
    # The shared control plane (`hpcfleet server up`, docs/deploy.md). Credentials in
    # these URLs stay in the environment: they are never written anywhere.
    work_pool: str = "hpcfleet"  # Prefect work pool the worker serves
    deployment: str = "hpcfleet"  # deployment `cross-site-run/<this>` that runs launch
    prefect_database_url: str | None = None  # Prefect server's database (asyncpg URL)
    mlflow_database_url: str | None = None  # MLflow server's backend store
    mlflow_artifacts: str | None = None  # s3://bucket/prefix or a directory

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return home_path(value)

    @property
    def store_url(self) -> str:
        return store_url_for(self.home, self.database_url)

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else a SQLite store under the home."""
        return tracking_uri_for(self.home, os.environ)

    @property
    def artifact_root(self) -> str | None:
        """Local artifact directory for the embedded default; a server decides its own."""
        return artifact_root_for(self.home, os.environ)

    @property
    def prefect_api_url(self) -> str | None:
        """PREFECT_API_URL: when set, runs go to the control plane's deployment."""
        return os.environ.get("PREFECT_API_URL") or None

    @property
    def server_dir(self) -> Path:
        """Pid files, logs and local state of `hpcfleet server`."""
        return self.home / "server"
