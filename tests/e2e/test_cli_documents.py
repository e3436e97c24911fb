"""One partner's document breaks nobody else: the CLI refuses what would not read back,
lists around a stored row that no longer validates, and lets its owner remove it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update

from registry.store import Store
from registry.tables import RunRow, SiteRow
from tests.helpers import cli, cli_env, consortium, write_yaml


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path / "home")
    consortium(store_of(env))  # site-a (cuni), site-b (csc); straight into the store: fast
    env["HPCFLEET_PARTNER"] = "cuni"
    return env


def store_of(env: dict[str, str]) -> Store:
    return Store.open(f"sqlite:///{env['HPCFLEET_HOME']}/registry.db")


def test_a_poll_interval_that_would_not_read_back_is_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    document: dict[str, object] = {"name": "tiny", "partner": "csc", "scheduler": "local"}
    document["policy"] = {"min_poll_interval": 0.00001}
    path = write_yaml(tmp_path / "tiny.yaml", document)
    result = cli(env, "site", "add", str(path), "--as", "csc")
    assert result.returncode == 2, result.stderr
    assert f"{path}: policy.min_poll_interval" in result.stderr
    assert "Traceback" not in result.stderr


def test_deeply_nested_yaml_exits_2_naming_the_file(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 20_000 + "]" * 20_000 + "\n")
    result = cli(env, "run", "launch", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"hpcfleet: {path}: line 1: ")
    assert "Traceback" not in result.stderr


def test_a_broken_stored_site_spoils_only_itself(env: dict[str, str], tmp_path: Path) -> None:
    store = store_of(env)
    with store.engine.begin() as connection:  # as stored before the bounds existed
        document: dict[str, object] = {"name": "site-b", "partner": "csc", "scheduler": "local"}
        document["policy"] = {"min_poll_interval": "1e-05s"}
        connection.execute(
            update(SiteRow).where(SiteRow.name == "site-b").values(document=document)
        )
    listed = cli(env, "site", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["site-a"]
    assert "site 'site-b' (partner csc)" in listed.stderr
    assert "Traceback" not in listed.stderr

    spec = {"name": "r", "stages": [{"name": "a", "site": "site-a", "command": ["true"]}]}
    launched = cli(env, "run", "launch", str(write_yaml(tmp_path / "run.yaml", spec)))
    assert launched.returncode == 0, launched.stderr
    assert cli(env, "site", "usage").returncode == 0

    assert cli(env, "site", "remove", "site-b").returncode == 3  # cuni is not the owner
    removed = cli(env, "site", "remove", "site-b", "--as", "csc")
    assert removed.returncode == 0, removed.stderr
    assert cli(env, "site", "list").stderr == ""


def test_run_list_names_a_broken_run_and_lists_the_rest(
    env: dict[str, str], tmp_path: Path
) -> None:
    spec = {"name": "r", "stages": [{"name": "a", "site": "site-a", "command": ["true"]}]}
    store = store_of(env)
    from registry.runspec import RunSpec

    for run_id in ("good0001", "bad00001"):
        store.create_run(run_id, RunSpec.model_validate(spec), "cuni")
    with store.engine.begin() as connection:
        connection.execute(
            update(RunRow).where(RunRow.run_id == "bad00001").values(state="EXPLODED")
        )
    listed = cli(env, "run", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["good0001"]
    assert "run 'bad00001' (partner cuni)" in listed.stderr
