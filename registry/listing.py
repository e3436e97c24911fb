"""Light reads for the listings (`run list`, `site list`): the columns they show, read
without SQLAlchemy's ORM, the pydantic models or the run specs.

Importing `registry.store` alone costs ~0.6 s of CPU (SQLAlchemy, the ORM mapping, every
document model), more than a listing's own work. A SQLite store is read here with the
standard library's `sqlite3` (SELECTs only); another database with SQLAlchemy Core text
queries. Errors are the store's (`StoreError`, saying whether a retry can help); a
database not at the schema this code needs gives `None`, and the caller opens the full
`Store` first (which migrates it, or says why it cannot), then reads again.

Rows that cannot be shown are reported as the store reports them (`BrokenRow`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from registry.checkpoint_record import CHECKPOINT_COLUMNS, CheckpointRecord
from registry.errors import DocumentError, StoreError
from registry.schema import HEAD, VERSION_TABLE
from registry.states import JobState, RunState
from registry.stored_result import StoredResult, stored_results

if TYPE_CHECKING:
    from registry.records import JobRecord, RunRecord, StageRecord

Record = TypeVar("Record")
RUN_COLUMNS = (
    "run_id, name, partner, experiment, state, reason, created, started, ended, "
    "mlflow_run_id, prefect_flow_run_id"
)
RUN_DETAIL_COLUMNS = "cancel_requested, orchestrator, heartbeat, spec, site_documents"
STAGE_COLUMNS = "run_id, name, state, sites, attempt, reason, choice, started, ended"
JOB_COLUMNS = (
    "id, run_id, stage, attempt, site, job_name, scheduler_id, array_index, array_value, "
    "state, exit_code, reason, submitted, started, ended, gpu_hours, node, mlflow_run_id, "
    "stdout_path, stderr_path, checkpoint"
)
RESULT_COLUMNS = "stage, metric, value, site, attempt, cell, checkpoint, array_index"


@dataclass(frozen=True)
class BrokenRow:
    """A stored document that no longer validates: reported, skipped, still removable."""

    kind: str
    name: str
    owner: str
    problem: str

    def warning(self) -> str:
        return (
            f"stored {self.kind} {self.name!r} (partner {self.owner}) cannot be read and is "
            f"left out: {self.problem}"
        )


@dataclass(frozen=True)
class RunSummary:
    """The columns of a run that `run list` shows (names as on `RunRecord`)."""

    run_id: str
    name: str
    partner: str
    experiment: str
    state: RunState
    reason: str | None
    created: datetime
    started: datetime | None
    ended: datetime | None
    mlflow_run_id: str | None
    prefect_flow_run_id: str | None


@dataclass(frozen=True)
class SiteRow:
    """A stored site document, not validated yet."""

    name: str
    partner: str
    document: dict[str, Any]


@dataclass(frozen=True)
class ProbeSummary:
    site: str
    checked_at: datetime
    reachable: bool
    ok: bool


class _Reader(Protocol):
    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        """The rows of `query`, whose parameters are written `:name`."""


class _SqliteReader:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        try:
            return self.connection.execute(query, params or {}).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(exc, isinstance(exc, sqlite3.OperationalError)) from None


class _CoreReader:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        try:
            return list(self.connection.execute(text(query), dict(params or {})).all())
        except SQLAlchemyError as exc:
            raise _store_error(exc, isinstance(exc, OperationalError)) from None


def _store_error(exc: Exception, transient: bool) -> StoreError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return StoreError(f"store error: {exc.__class__.__name__}: {first}", transient=transient)


class Listing:
    """Read-only queries on a store that is at the schema HEAD."""

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader

    def runs(self) -> tuple[list[RunSummary], list[BrokenRow]]:
        """Every run, oldest first; a run whose state is unknown is left out and named."""
        rows = self.reader.rows(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created, run_id")
        runs: list[RunSummary] = []
        broken: list[BrokenRow] = []
        for row in rows:
            try:
                state = RunState(row[4])
            except ValueError:
                broken.append(BrokenRow("run", row[0], row[2], f"{row[4]!r} is not a run state"))
                continue
            runs.append(RunSummary(**_run_fields(row, state)))
        return runs, broken

    def run(self, run_id: str) -> RunRecord:
        """One run with its spec (validated when first asked for, as by the store)."""
        from registry.errors import NotFoundError
        from registry.records import RunRecord

        rows = self.reader.rows(
            f"SELECT {RUN_COLUMNS}, {RUN_DETAIL_COLUMNS} FROM runs WHERE run_id = :run_id",
            {"run_id": run_id},
        )
        if not rows:
            raise NotFoundError(f"no run {run_id!r}; see 'hpcfleet run list'")
        row = rows[0]
        try:
            state = RunState(row[4])
        except ValueError:
            raise DocumentError(
                f"{row[4]!r} is not a run state", source=f"stored run {row[0]}"
            ) from None
        return RunRecord(
            **_run_fields(row, state),
            cancel_requested=bool(row[11]),
            orchestrator=row[12],
            heartbeat=_maybe_moment(row[13]),
            spec=_document(row[14]),
            site_documents=_document(row[15]),
        )

    def stages(self, run_id: str) -> list[StageRecord]:
        from registry.records import StageRecord

        rows = self.reader.rows(
            f"SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = :run_id ORDER BY position",
            {"run_id": run_id},
        )
        return [
            StageRecord(
                run_id=row[0],
                name=row[1],
                state=RunState(row[2]),
                sites=_json(row[3]) or [],
                attempt=row[4],
                reason=row[5],
                choice=row[6],
                started=_maybe_moment(row[7]),
                ended=_maybe_moment(row[8]),
            )
            for row in rows
        ]

    def jobs(self, run_id: str) -> list[JobRecord]:
        from registry.records import JobRecord

        rows = self.reader.rows(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = :run_id ORDER BY id",
            {"run_id": run_id},
        )
        names = [name.strip() for name in JOB_COLUMNS.split(",")]
        jobs = []
        for row in rows:
            fields = dict(zip(names, row, strict=True))
            fields["state"] = JobState(fields["state"])
            fields["gpu_hours"] = fields["gpu_hours"] or 0.0
            for moment in ("submitted", "started", "ended"):
                fields[moment] = _maybe_moment(fields[moment])
            jobs.append(JobRecord(**fields))
        return jobs

    def results(self, run_id: str) -> list[StoredResult]:
        """The run's stored results, in the order they were stored."""
        rows = self.reader.rows(
            f"SELECT {RESULT_COLUMNS} FROM results WHERE run_id = :run_id ORDER BY id",
            {"run_id": run_id},
        )
        return stored_results(rows)

    def checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """The run's recorded checkpoints, in the order they were found."""
        rows = self.reader.rows(
            f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM checkpoints "
            "WHERE run_id = :run_id ORDER BY id",
            {"run_id": run_id},
        )
        return [
            CheckpointRecord(
                stage=row[0],
                name=row[1],
                path=row[2],
                site=row[3],
                size=row[4],
                sha256=row[5],
                found=_moment(row[6]),
            )
            for row in rows
        ]

    def sites(self) -> list[SiteRow]:
        rows = self.reader.rows("SELECT name, partner, document FROM sites ORDER BY name")
        return [SiteRow(row[0], row[1], _document(row[2])) for row in rows]

    def latest_probes(self) -> dict[str, ProbeSummary]:
        rows = self.reader.rows(
            "SELECT site, checked_at, reachable, ok FROM probes ORDER BY checked_at"
        )
        return {
            row[0]: ProbeSummary(row[0], _moment(row[1]), bool(row[2]), bool(row[3]))
            for row in rows
        }


def scan_sites(
    rows: Sequence[SiteRow], validate: Callable[[SiteRow], Record]
) -> tuple[list[Record], list[BrokenRow]]:
    """`validate(row)` for every site; one that fails is left out and named."""
    records: list[Record] = []
    broken: list[BrokenRow] = []
    for row in rows:
        try:
            records.append(validate(row))
        except DocumentError as exc:
            problem = str(exc).removeprefix(f"{exc.source}: ") if exc.source else str(exc)
            broken.append(BrokenRow("site", row.name, row.partner, problem))
    return records, broken


@contextmanager
def open_listing(url: str) -> Iterator[Listing | None]:
    """A `Listing` of the store at `url`; None when it is not at the schema HEAD (or,
    for SQLite, does not exist yet)."""
    if url.startswith("sqlite"):
        with _sqlite_listing(url) as listing:
            yield listing
        return
    with _core_listing(url) as listing:
        yield listing


@contextmanager
def _sqlite_listing(url: str) -> Iterator[Listing | None]:
    database = _sqlite_path(url)
    if database is None or not database.is_file():
        yield None
        return
    try:
        connection = sqlite3.connect(
            f"{database.as_uri()}?mode=rw", uri=True, timeout=30, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _store_error(exc, True) from None
    try:
        reader = _SqliteReader(connection)
        yield Listing(reader) if _at_head(reader) else None
    finally:
        connection.close()


@contextmanager
def _core_listing(url: str) -> Iterator[Listing | None]:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    engine = create_engine(url)
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:  # as `Store.open` says it: where, without the password
        engine.dispose()
        raise StoreError(
            f"cannot open the store at {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
            transient=isinstance(exc, OperationalError),
        ) from None
    try:
        reader = _CoreReader(connection)
        yield Listing(reader) if _at_head(reader) else None
    finally:
        connection.close()
        engine.dispose()


def _at_head(reader: _Reader) -> bool:
    try:
        rows = reader.rows(f"SELECT version_num FROM {VERSION_TABLE}")
    except StoreError:  # no version table: never migrated
        return False
    return [tuple(row) for row in rows] == [(HEAD,)]


def _run_fields(row: Sequence[Any], state: RunState) -> dict[str, Any]:
    """The fields of a row's RUN_COLUMNS that a run summary and a run record share."""
    return {
        "run_id": row[0],
        "name": row[1],
        "partner": row[2],
        "experiment": row[3],
        "state": state,
        "reason": row[5],
        "created": _moment(row[6]),
        "started": _maybe_moment(row[7]),
        "ended": _maybe_moment(row[8]),
        "mlflow_run_id": row[9],
        "prefect_flow_run_id": row[10],
    }


def _sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///path` URL; None for memory databases or URL options."""
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url.removeprefix(prefix)
            if not path or path == ":memory:" or "?" in path:
                return None
            return Path(path).absolute()
    return None


def _json(value: Any) -> Any:
    """A JSON column's value (SQLite keeps it as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _document(value: Any) -> dict[str, Any]:
    data = _json(value)
    return data if isinstance(data, dict) else {}


def _moment(value: Any) -> datetime:
    """A stored UTC moment (SQLite keeps it as text without its zone)."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise StoreError(f"store error: {value!r} is not a moment")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _maybe_moment(value: Any) -> datetime | None:
    return None if value is None else _moment(value)
