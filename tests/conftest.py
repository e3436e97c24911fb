"""Test-wide setup: the real SLURM + sshd sandbox fixtures, and quiet, isolated engines."""

from __future__ import annotations

import os

pytest_plugins = ["tests.sandbox.fixtures"]

# Engines read these once at import; no test may talk to the network or share state.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
for name in ("HPCFLEET_PARTNER", "HPCFLEET_DATABASE_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
    os.environ.pop(name, None)
