"""The registry's Alembic migrations, on SQLite and on the local PostgreSQL: they build
exactly the tables of `registry.tables`, `Store.open` applies or checks them, old
databases are adopted, newer ones refused, and `hpcfleet db upgrade` reports."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from registry import migrate
from registry.errors import NotFoundError
from registry.partner import Partner
from registry.store import Store, create_store_engine
from registry.tables import Base
from tests.helpers import REPO, cli, cli_env

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _admin() -> Any:
    engine = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    return engine


@pytest.fixture
def pg_database() -> Iterator[Any]:
    """A factory of fresh, uniquely named PostgreSQL databases, dropped afterwards."""
    admin = _admin()
    created: list[str] = []

    def make() -> str:
        name = f"hpcfleet_test_{secrets.token_hex(4)}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return f"{POSTGRES}/{name}"

    yield make
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("pg_database")()  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _forget_checked_urls() -> None:
    migrate.forget_checked()  # each test's databases are new; no URL is known at HEAD


def _schema(url: str) -> dict[str, Any]:
    """Everything reflection tells about the registry's tables (not the version table)."""
    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            schema: dict[str, Any] = {}
            for table in sorted(Base.metadata.tables):
                schema[table] = {
                    "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"))
                                for c in inspector.get_columns(table)],
                    "pk": inspector.get_pk_constraint(table),
                    "fks": sorted(map(str, inspector.get_foreign_keys(table))),
                    "indexes": sorted(map(str, inspector.get_indexes(table))),
                }
            schema["tables"] = sorted(inspector.get_table_names())
            return schema
    finally:
        engine.dispose()


def test_head_constant_names_the_newest_migration() -> None:
    assert migrate.head_revision() == migrate.HEAD


def test_migrations_build_exactly_the_tables_of_the_models(
    fresh_url: str, tmp_path: Path, pg_database: Any
) -> None:
    before, after = migrate.upgrade(fresh_url)
    assert (before, after) == (None, migrate.HEAD)
    engine = create_store_engine(fresh_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": migrate.VERSION_TABLE, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
    # And the very same tables, constraints and indexes as create_all made before.
    reference = (f"sqlite:///{tmp_path / 'reference.db'}" if fresh_url.startswith("sqlite")
                 else pg_database())
    reference_engine = create_store_engine(reference)
    Base.metadata.create_all(reference_engine)
    reference_engine.dispose()
    migrated, created = _schema(fresh_url), _schema(reference)
    assert migrated.pop("tables") == sorted([*Base.metadata.tables, migrate.VERSION_TABLE])
    created.pop("tables")
    assert migrated == created


def test_store_open_migrates_a_new_database_and_keeps_its_data(fresh_url: str) -> None:
    store = Store.open(fresh_url)
    store.put_partner(Partner(id="cuni", name="Charles University"))
    store.close()
    assert migrate.current(fresh_url) == migrate.HEAD
    migrate.forget_checked()
    assert [p.id for p in Store.open(fresh_url).list_partners()] == ["cuni"]
    assert migrate.upgrade(fresh_url) == (migrate.HEAD, migrate.HEAD)  # nothing to do


def _baseline_without_version(url: str) -> None:
    """What the foundation's Store.open made before migrations: the baseline tables,
    with no version table."""
    from alembic import command

    engine = create_store_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), migrate.BASELINE)
        connection.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        connection.execute(text("INSERT INTO partners (id, name, created) "
                                "VALUES ('csc', 'CSC', CURRENT_TIMESTAMP)"))
    engine.dispose()


def test_database_made_before_migrations_is_adopted(fresh_url: str) -> None:
    _baseline_without_version(fresh_url)
    if fresh_url.startswith("postgresql"):
        # A shared database is adopted at the baseline, then left to its operator.
        with pytest.raises(migrate.SchemaError, match="hpcfleet db upgrade"):
            Store.open(fresh_url)
        assert migrate.current(fresh_url) == migrate.BASELINE
        assert migrate.upgrade(fresh_url) == (migrate.BASELINE, migrate.HEAD)
    store = Store.open(fresh_url)
    assert [p.id for p in store.list_partners()] == ["csc"]
    assert migrate.current(fresh_url) == migrate.HEAD
    with pytest.raises(NotFoundError):
        store.get_partner("cuni")


def test_runs_stored_before_site_documents_read_as_having_none(fresh_url: str) -> None:
    from alembic import command

    from registry.runspec import RunSpec

    engine = create_store_engine(fresh_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), "0001")
    engine.dispose()
    old = Store(create_store_engine(fresh_url))  # Store() checks no schema: it is 0001
    old.put_partner(Partner(id="cuni", name="Charles University"))
    with old.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO runs (run_id, name, partner, experiment, state, spec, created, "
                 "cancel_requested) VALUES ('r1', 'r', 'cuni', 'r', 'RUNNING', :spec, "
                 "CURRENT_TIMESTAMP, false)"),
            {"spec": json.dumps(RunSpec.model_validate(
                {"name": "r", "stages": [{"name": "s", "site": "a", "command": ["true"]}]}
            ).model_dump(mode="json"))},
        )
    old.close()
    migrate.forget_checked()
    assert migrate.upgrade(fresh_url) == ("0001", migrate.HEAD)
    assert Store.open(fresh_url).get_run("r1").site_documents == {}


def test_database_from_a_newer_hpcfleet_is_refused(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    engine = create_store_engine(fresh_url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'f00d'"))
    engine.dispose()
    with pytest.raises(migrate.SchemaError, match="newer hpcfleet"):
        Store.open(fresh_url)
    with pytest.raises(migrate.SchemaError, match="newer hpcfleet"):
        migrate.upgrade(fresh_url)


def test_first_opens_from_several_processes_at_once_all_succeed(fresh_url: str) -> None:
    code = "import sys; from registry.store import Store; Store.open(sys.argv[1]).list_runs()"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, fresh_url], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert migrate.current(fresh_url) == migrate.HEAD


def test_db_upgrade_command_hides_the_password(pg_database: Any, tmp_path: Path) -> None:
    # Trust authentication ignores the password: it is there to be hidden.
    url = pg_database().replace("postgres@", "postgres:pw-Secret-42@")
    env = cli_env(tmp_path / "home")
    env["HPCFLEET_DATABASE_URL"] = url
    result = cli(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"empty -> {migrate.HEAD}" in result.stderr
    assert "pw-Secret-42" not in result.stdout + result.stderr and "***" in result.stderr
    again = cli(env, "db", "upgrade")
    assert "up to date" in again.stderr
    shown = json.loads(cli(env, "db", "current", "--json").stdout)
    assert shown["revision"] == shown["head"] == migrate.HEAD
    assert "pw-Secret-42" not in shown["database"]


def test_baseline_tables_are_those_migration_0001_creates(fresh_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    engine = create_store_engine(fresh_url)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), migrate.BASELINE)
        made = set(inspect(connection).get_table_names()) - {migrate.VERSION_TABLE}
    engine.dispose()
    assert made == migrate.BASELINE_TABLES
