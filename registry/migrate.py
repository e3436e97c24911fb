"""Schema migrations of the registry: Alembic revisions under `registry/migrations/`.

`Store.open` calls `ensure_schema`: one cheap query when the database is at `HEAD`
(and nothing at all the second time in a process). Otherwise it migrates by itself only
where that cannot surprise anybody: the embedded SQLite file, a fresh empty database,
or a database the pre-migration code created (adopted at the baseline revision). A
shared database that is behind is left to its operator (`hpcfleet db upgrade`), so that
one partner's newer CLI never changes the schema under a running control plane.

Concurrent upgrades are serialised: an advisory lock on PostgreSQL, a lock file next to
a SQLite database.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from registry.errors import HpcfleetError
from registry.owner_only import private_file
from registry.schema import HEAD as HEAD  # where `hpcfleet db` and the tests read it
from registry.schema import VERSION_TABLE as VERSION_TABLE
from registry.tables import Base

if TYPE_CHECKING:
    from alembic.config import Config

BASELINE = "0001"  # the schema that `Base.metadata.create_all` made before migrations
# The tables of that schema (migration 0001): a database made before migrations has all
# of them, and none that later migrations add.
BASELINE_TABLES = frozenset(
    {"partners", "probes", "milestones", "runs", "sites", "jobs", "run_files", "stages"}
)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x6870_6366  # "hpcf": pg_advisory_xact_lock key of schema upgrades

_checked: set[str] = set()  # URLs known to be at HEAD in this process
_checked_lock = threading.Lock()


class SchemaError(HpcfleetError):
    """The database's schema is not the one this hpcfleet needs."""


def forget_checked() -> None:
    """Forget which databases this process found at HEAD: the next open checks again
    (for a process that replaces a database behind an open URL, as tests do)."""
    with _checked_lock:
        _checked.clear()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our migrations (no alembic.ini involved)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("the registry has no migrations")
    return head


def revision(connection: Connection) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def ensure_schema(engine: Engine) -> None:
    """Make sure the database has the schema this code needs (see the module docstring)."""
    key = engine.url.render_as_string(hide_password=False)
    with _checked_lock:
        if key in _checked:
            return
    with engine.connect() as connection:
        current = revision(connection)
        empty = current is None and not _registry_tables(connection)
    if current != HEAD:
        _check_known(engine, current)
        if engine.dialect.name == "sqlite" or empty:
            current = _upgrade(engine)
        elif current is None:
            current = _upgrade(engine, adopt_only=True)
        if current != HEAD:
            raise SchemaError(
                f"the registry at {_shown(engine)} has schema revision {current}; this "
                f"hpcfleet needs {HEAD}: run 'hpcfleet db upgrade' (back the database up first)"
            )
    with _checked_lock:
        _checked.add(key)


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database at `url` to HEAD; returns (revision before, revision after)."""
    with _engine(url) as engine:
        with engine.connect() as connection:
            before = revision(connection)
        _check_known(engine, before)
        return before, _upgrade(engine)


def current(url: str) -> str | None:
    """The revision of the database at `url` (None: not migrated yet)."""
    with _engine(url) as engine, engine.connect() as connection:
        return revision(connection)


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """An engine for one command; database errors become `StoreError`s."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from registry.errors import StoreError
    from registry.store import create_store_engine

    engine = create_store_engine(url)
    try:
        yield engine
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot migrate the registry at {_shown(engine)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}",
            transient=isinstance(exc, OperationalError),
        ) from None
    finally:
        engine.dispose()


def _upgrade(engine: Engine, *, adopt_only: bool = False) -> str:
    """Migrate to HEAD (or, with `adopt_only`, only stamp a pre-migration database)."""
    from alembic import command

    with _sqlite_file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config = alembic_config(connection)
        before = revision(connection)  # again: another process may have won the lock
        if before is None and _registry_tables(connection):
            missing = sorted(BASELINE_TABLES - _registry_tables(connection))
            if missing:
                raise SchemaError(
                    f"the registry at {_shown(engine)} has some of hpcfleet's tables but "
                    f"not {', '.join(missing)}; restore it from a backup"
                )
            command.stamp(config, BASELINE)  # made by create_all before migrations existed
        if before != HEAD and not adopt_only:
            command.upgrade(config, "head")
        after = revision(connection)
    if after is None:
        raise SchemaError(f"migrating the registry at {_shown(engine)} left no revision")
    return after


def _check_known(engine: Engine, current: str | None) -> None:
    """A revision we do not know comes from a newer hpcfleet: never touch it."""
    if current is None or current == HEAD:
        return
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    if current not in {script.revision for script in scripts.walk_revisions()}:
        raise SchemaError(
            f"the registry at {_shown(engine)} has schema revision {current}, which this "
            "hpcfleet does not know: it was upgraded by a newer hpcfleet; upgrade this one"
        )


def _registry_tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) & set(Base.metadata.tables)


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (SQLite DDL is not
    reliably transactional through the sqlite3 module)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    with private_file(lock_path).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
