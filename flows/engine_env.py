"""Prefect and MLflow settings hpcfleet applies before they are imported (both read
them once).

Only defaults: anything the user set in the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_engines(home: Path) -> None:
    """Quiet, self-contained Prefect for the embedded default.

    No analytics or telemetry (there may be no network, and it logs errors then), state
    under $HPCFLEET_HOME/prefect, and only warnings on the console so that hpcfleet's
    own progress display stays readable.
    """
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the client-side telemetry notice and calls
    os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # MLflow logs its schema migrations at INFO on first use of a store.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
