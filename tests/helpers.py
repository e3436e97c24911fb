"""Small helpers shared by tests: writing documents, registering a consortium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from registry.partner import Partner
from registry.site import Site
from registry.store import Store

if TYPE_CHECKING:
    from flows.engine import EngineConfig

REPO = Path(__file__).resolve().parent.parent
HPCFLEET = [sys.executable, "-m", "hpcfleet"]


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def local_site(name: str, partner: str, **extra: Any) -> Site:
    document: dict[str, Any] = {
        "name": name,
        "partner": partner,
        "scheduler": "local",
        "local": {"slots": 2},
        "shared_with": ["*"],
        "policy": {"min_poll_interval": "0.2s"},
    }
    document.update(extra)
    return Site.model_validate(document)


def consortium(store: Store) -> None:
    """Partners cuni and csc; local sites site-a (cuni) and site-b (csc, shared with cuni)."""
    store.put_partner(Partner(id="cuni", name="Charles University", country="CZ"))
    store.put_partner(Partner(id="csc", name="CSC", country="FI"))
    store.put_partner(Partner(id="other", name="Other Org"))
    store.put_site(local_site("site-a", "cuni"), "cuni")
    store.put_site(
        local_site("site-b", "csc", shared_with=["cuni"], local={"slots": 2, "gpus": 1}), "csc"
    )


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPCFLEET, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def cli_env(home: Path) -> dict[str, str]:
    """Environment for a CLI subprocess with its own HPCFLEET_HOME and quiet engines."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HPCFLEET_", "MLFLOW_", "PREFECT_"))
    }
    env.update(
        HPCFLEET_HOME=str(home),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # A test's commands share its home's Prefect server; it does not outlive the test long.
        HPCFLEET_PREFECT_IDLE_SECONDS="30",
        COLUMNS="160",
    )
    return env


DATA = REPO / "tests" / "data"


def assert_golden(path: Path, text: str) -> None:
    """`text` equals the golden file at `path`; UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs from its golden file"


def wait_until(check: Callable[[], bool], timeout: float = 60, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def embedded_engine(home: Path) -> EngineConfig:
    """The embedded default's engine under `home`: SQLite registry and MLflow store,
    artifacts in a directory (flows.engine imported here: it is not cheap)."""
    from flows.engine import EngineConfig

    return EngineConfig(
        database_url=f"sqlite:///{home / 'registry.db'}",
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=(home / "mlartifacts").as_uri(),
    )
