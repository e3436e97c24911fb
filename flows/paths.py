"""Where hpcfleet keeps things: the path rules of INTERFACE.md's "Configuration", shared
by `flows.settings.Settings` (the CLI) and `dashboard.config`.

Pure functions of the environment, without pydantic: the CLI applies them before every
command (`configure_engines`), and `hpcfleet run --help` should not pay for a settings
model it does not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOME = "~/.hpcfleet"


def home_path(value: str | Path | None) -> Path:
    """HPCFLEET_HOME as an absolute path (default ~/.hpcfleet)."""
    return Path(value or DEFAULT_HOME).expanduser().absolute()


def home_from(environ: Mapping[str, str]) -> Path:
    return home_path(environ.get("HPCFLEET_HOME"))


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
