"""Configuration (pydantic-settings, env prefix HPCFLEET_; INTERFACE.md, "Configuration"),
over the path rules of `flows.paths`, which the dashboard uses too.

Import-light on purpose: most CLI commands read it, so it imports neither the engine
nor SQLAlchemy, Prefect or MLflow, not even inside a function (import-linter counts
those too, and the layers above must not reach SSH through it). Callers build
`flows.engine.EngineConfig` from these fields themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.paths import (
    DEFAULT_HOME,
    artifact_root_for,
    home_path,
    store_url_for,
    tracking_uri_for,
)


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
    # Set by `server up` in its worker's environment only (flows.control.environment):
    # this process drives runs for the whole consortium, so it refuses local sites.
    control_plane: bool = False

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
