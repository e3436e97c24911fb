"""Configuration (pydantic-settings, env prefix HPCFLEET_; INTERFACE.md, "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.engine import EngineConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPCFLEET_", extra="ignore")

    home: Path = Path("~/.hpcfleet")
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
        return value.expanduser().absolute()

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set, else a SQLite store under the home."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Local artifact directory for the embedded default; a server decides its own."""
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return None
        return (self.home / "mlartifacts").as_uri()

    @property
    def prefect_api_url(self) -> str | None:
        """PREFECT_API_URL: when set, runs go to the control plane's deployment."""
        return os.environ.get("PREFECT_API_URL") or None

    @property
    def server_dir(self) -> Path:
        """Pid files, logs and local state of `hpcfleet server`."""
        return self.home / "server"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(self.store_url, self.home, self.tracking_uri, self.artifact_root)
