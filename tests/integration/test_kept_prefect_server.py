"""The embedded default's kept Prefect server (a real one): started once per home,
reused by the next process, kept while a process uses it, stopped when idle."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.prefect_keeper import STATE_FILE
from tests.helpers import REPO, cli_env

IDLE = 4
USE = """
import sys, time
from pathlib import Path
from flows.prefect_api import start_api
api = start_api(Path(sys.argv[1]))
api.wait_ready()
print(api.url, api.server.pid, flush=True)
time.sleep(float(sys.argv[2]))
with __import__("urllib.request").request.urlopen(api.url + "/health", timeout=5) as answer:
    assert answer.status == 200
"""


def use(home: Path, env: dict[str, str], hold: float = 0.0) -> subprocess.Popen[str]:
    """A process that gets the home's server, prints its URL and keeper pid, holds it
    `hold` seconds and checks it still answers."""
    return subprocess.Popen(
        [sys.executable, "-c", USE, str(home), str(hold)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def served(process: subprocess.Popen[str]) -> tuple[str, int]:
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out
    url, pid = out.split()
    return url, int(pid)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    state = tmp_path / "prefect" / STATE_FILE
    if state.exists():  # a failed test: stop its keeper
        os.kill(json.loads(state.read_text())["pid"], 15)


def test_the_server_is_reused_kept_while_used_and_stopped_when_idle(home: Path) -> None:
    env = {**cli_env(home), "HPCFLEET_PREFECT_IDLE_SECONDS": str(IDLE)}
    env["MLFLOW_TRACKING_URI"] = "http://alice:pw-probe@127.0.0.1:9"
    url, keeper = served(use(home, env))
    assert url.startswith("http://127.0.0.1:")
    state = home / "prefect" / STATE_FILE
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert answers(url)
    # It outlives the command that started it, but not with that command's secrets.
    assert b"pw-probe" not in Path(f"/proc/{keeper}/environ").read_bytes()

    # A process holding the server past the idle time keeps it, and the next reuses it.
    holder = use(home, env, hold=IDLE + 3)
    assert served(use(home, env)) == (url, keeper)
    assert served(holder) == (url, keeper)

    # Nobody uses it: it stops after the idle time, and says so by removing its state.
    deadline = time.monotonic() + IDLE + 30
    while time.monotonic() < deadline and not (gone(keeper) and not state.exists()):
        time.sleep(0.5)
    assert gone(keeper) and not state.exists()
    assert not answers(url)


def test_other_prefect_settings_get_their_own_server(home: Path) -> None:
    env = {**cli_env(home), "HPCFLEET_PREFECT_IDLE_SECONDS": str(IDLE)}
    url, keeper = served(use(home, env))
    other = {**env, "PREFECT_LOGGING_LEVEL": "ERROR"}
    other_url, other_keeper = served(use(home, other))
    assert other_keeper != keeper and other_url != url
    deadline = time.monotonic() + 30  # the first keeper is not named any more: it stops
    while time.monotonic() < deadline and not gone(keeper):
        time.sleep(0.5)
    assert gone(keeper) and not answers(url)
