"""`hpcfleet --version`: versions read from the installed metadata, never by importing
the packages (importing Prefect alone takes a second)."""

from __future__ import annotations

import json
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

ENGINES = ("prefect", "mlflow", "paramiko")


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """hpcfleet, the engines it drives and the Python running it."""
    found: dict[str, str | None] = {"hpcfleet": installed_version("hpcfleet")}
    for name in ENGINES:
        found[name] = installed_version(name)
    found["python"] = platform.python_version()
    found["python_executable"] = sys.executable
    return found


def version_text(as_json: bool) -> str:
    if as_json:
        return json.dumps(versions(), indent=2)
    return f"hpcfleet {installed_version('hpcfleet') or 'unknown'}"
