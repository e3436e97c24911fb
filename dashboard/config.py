"""Where the dashboard reads from: the same variables, with the same defaults, as the CLI.

The path rules live in `flows.paths`, which the CLI's settings use too: HPCFLEET_HOME (default
~/.hpcfleet), HPCFLEET_DATABASE_URL (default the SQLite file registry.db under the home)
and MLFLOW_TRACKING_URI (default mlflow.db under the home).
The dashboard's own knobs: MLFLOW_UI_URL and PREFECT_UI_URL (where the links on the
run detail page point; the Prefect UI defaults to the one beside PREFECT_API_URL) and
HPCFLEET_DASHBOARD_REFRESH (seconds between live updates).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flows.paths import home_from, store_url_for, tracking_uri_for

DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"  # `mlflow ui`'s default
DEFAULT_PREFECT_UI_URL = "http://127.0.0.1:4200"  # `prefect server start`'s default
DEFAULT_REFRESH_SECONDS = 30.0
MIN_REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class DashboardConfig:
    home: Path
    store_url: str
    tracking_uri: str
    mlflow_ui_url: str
    prefect_ui_url: str
    refresh_seconds: float


def load_config(environ: Mapping[str, str] | None = None) -> DashboardConfig:
    env = os.environ if environ is None else environ
    home = home_from(env)
    return DashboardConfig(
        home=home,
        store_url=store_url_for(home, env.get("HPCFLEET_DATABASE_URL")),
        tracking_uri=tracking_uri_for(home, env),
        mlflow_ui_url=(env.get("MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL).rstrip("/"),
        prefect_ui_url=_prefect_ui_url(env),
        refresh_seconds=_refresh(env.get("HPCFLEET_DASHBOARD_REFRESH")),
    )


def _prefect_ui_url(env: Mapping[str, str]) -> str:
    """PREFECT_UI_URL, else the UI beside PREFECT_API_URL (`.../api` -> `...`)."""
    if env.get("PREFECT_UI_URL"):
        return env["PREFECT_UI_URL"].rstrip("/")
    api = (env.get("PREFECT_API_URL") or "").rstrip("/")
    if api.endswith("/api"):
        return api.removesuffix("/api")
    return DEFAULT_PREFECT_UI_URL


def _refresh(text: str | None) -> float:
    try:
        seconds = float(text) if text else DEFAULT_REFRESH_SECONDS
    except ValueError:
        return DEFAULT_REFRESH_SECONDS
    return max(seconds, MIN_REFRESH_SECONDS)
