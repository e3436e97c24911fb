"""The embedded default's temporary Prefect server: started only without a
PREFECT_API_URL, and its default database migrated once per Prefect version."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import prefect_api


def test_a_configured_api_starts_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prefect_api, "_api", None)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert prefect_api.start_api(tmp_path) is None


def test_the_default_database_is_migrated_once_per_prefect_version(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path)}
    assert not prefect_api._migrated(env)  # no database yet
    prefect_api._mark_migrated(env)
    assert not prefect_api._migrated(env)  # nothing to mark without a database
    (tmp_path / "prefect.db").write_bytes(b"")
    prefect_api._mark_migrated(env)
    assert prefect_api._migrated(env)
    marker = tmp_path / "prefect.db.hpcfleet-migrated"
    marker.write_text("0.0.1\n")  # another Prefect: its migrations may differ
    assert not prefect_api._migrated(env)


def test_a_configured_database_is_always_migrated_by_prefect(tmp_path: Path) -> None:
    (tmp_path / "prefect.db").write_bytes(b"")
    env = {"PREFECT_HOME": str(tmp_path)}
    prefect_api._mark_migrated(env)
    db_env = {**env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://db/prefect"}
    assert prefect_api._migrated(env) and not prefect_api._migrated(db_env)


def test_the_server_listens_on_loopback_only() -> None:
    command = prefect_api.server_command(4321)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "4321"
