"""The control plane's supervisor on real processes (no Prefect or MLflow started): a
piece starts in a session of its own with a pid file and a log, stops whole, and the
secrets of its environment never reach a command line or an error message."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.control import supervisor
from flows.control.pieces import Piece, pieces
from flows.control.plan import ControlPlaneConfig, Plan, load_plan, save_plan
from sites.processes import group_members
from tests.helpers import wait_until

PASSWORD = "pw-Secret-42"


@pytest.fixture(autouse=True)
def _stop_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a failed test left running is stopped."""
    yield
    supervisor.stop(tmp_path, "worker", grace=1.0)


def piece(script: str, port: int | None = None) -> Piece:
    return Piece("worker", ["bash", "-c", script], {"PATH": "/usr/bin:/bin"}, "127.0.0.1", port,
                 (PASSWORD,))


def config(tmp_path: Path) -> ControlPlaneConfig:
    return ControlPlaneConfig(
        home=tmp_path,
        store_url=f"postgresql+psycopg://hpcfleet:{PASSWORD}@127.0.0.1:5432/registry",
        prefect_database_url=f"postgresql+asyncpg://prefect:{PASSWORD}@127.0.0.1:5432/prefect",
    )


def test_a_piece_starts_in_its_own_session_and_stops_with_everything_it_started(
    tmp_path: Path,
) -> None:
    record = supervisor.start(tmp_path, piece("sleep 300 & sleep 300 & wait"))
    assert supervisor.read_pid(tmp_path, "worker") == record and supervisor.is_running(record)
    wait_until(lambda: len(group_members(record.pid)) == 3, timeout=30, interval=0.05)
    assert "hpcfleet server: starting worker" in (tmp_path / "worker.log").read_text()
    assert supervisor.stop(tmp_path, "worker", grace=5.0) == record
    assert group_members(record.pid) == [] and not supervisor.is_running(record)
    assert not (tmp_path / "worker.pid").exists()
    assert supervisor.stop(tmp_path, "worker") is None  # nothing left to stop


def test_leftovers_of_a_dead_leader_are_stopped(tmp_path: Path) -> None:
    record = supervisor.start(tmp_path, piece("sleep 300 & exit 0"))
    wait_until(lambda: not supervisor.is_running(record), timeout=30, interval=0.05)
    assert group_members(record.pid), "the leader's child should outlive it"
    supervisor.stop(tmp_path, "worker", grace=5.0)
    assert group_members(record.pid) == []


def test_a_busy_port_is_refused_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(supervisor.ServerError, match=f"port {port} is in use.*--worker-port"):
            supervisor.start(tmp_path, piece("true", port))


def test_a_piece_that_dies_while_starting_shows_its_log_with_secrets_masked(
    tmp_path: Path,
) -> None:
    failing = piece(f"echo 'cannot connect with {PASSWORD}'; exit 1")
    record = supervisor.start(tmp_path, failing)
    with pytest.raises(supervisor.ServerError, match="worker exited while starting") as caught:
        supervisor.wait_ready(tmp_path, failing, record, lambda: False, timeout=30)
    assert "cannot connect with ***" in str(caught.value) and PASSWORD not in str(caught.value)


def test_secrets_go_to_environments_only(tmp_path: Path) -> None:
    plan = Plan(prefect_port=4299)
    specs = pieces(config(tmp_path), plan)
    assert list(specs) == ["prefect", "mlflow", "worker", "dashboard"]
    for spec in specs.values():
        assert PASSWORD not in " ".join(spec.command)
        assert PASSWORD in spec.secrets
    assert "4299" in specs["prefect"].command
    assert PASSWORD in specs["prefect"].env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "PREFECT_API_URL" not in specs["prefect"].env
    assert specs["worker"].env["PREFECT_API_URL"] == "http://127.0.0.1:4299/api"
    assert PASSWORD in specs["worker"].env["HPCFLEET_DATABASE_URL"]


def test_the_plan_is_remembered_with_overrides(tmp_path: Path) -> None:
    save_plan(tmp_path, Plan(prefect_port=4299, dashboard=False))
    assert json.loads((tmp_path / "plan.json").read_text())["prefect_port"] == 4299
    plan = load_plan(tmp_path, mlflow_port=5099, prefect_port=None)
    assert (plan.prefect_port, plan.mlflow_port, plan.enabled()) == (
        4299, 5099, ["prefect", "mlflow", "worker"])
