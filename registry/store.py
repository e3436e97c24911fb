"""The registry and run store: SQLite file by default, PostgreSQL by URL.

Every method is one short transaction, so the store can be shared by the orchestrator's
threads, a `run watch` in another process and the dashboard. Access rules are checked
here through `registry.access` before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from registry import access
from registry.errors import DocumentError, NotFoundError, StoreError
from registry.migrate import ensure_schema
from registry.milestone import Milestone
from registry.owner_only import private_sqlite
from registry.partner import Partner
from registry.records import (
    JobRecord,
    MilestoneRecord,
    ProbeRecord,
    RunRecord,
    SiteRecord,
    StageRecord,
)
from registry.runspec import RunSpec
from registry.site import Site
from registry.states import JobState, RunState
from registry.stored import Scan, scan, validate_stored
from registry.tables import (
    JobRow,
    MilestoneRow,
    PartnerRow,
    ProbeRow,
    RunFileRow,
    RunRow,
    SiteRow,
    StageRow,
    utcnow,
)


@contextmanager
def _store_errors() -> Iterator[None]:
    """SQLAlchemy's errors as the project's own, saying whether a retry can help."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(
            f"store error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
            transient=isinstance(exc, OperationalError),
        ) from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets `run watch` and the dashboard read while the orchestrator writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_store_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        private_sqlite(url)  # it holds partners' code: owner-only, whatever the umask
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Partners, sites, probes, runs, stages, jobs and milestones."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Store:
        engine = create_store_engine(url)
        try:
            # Alembic migrations; at the newest revision this is one cheap query.
            ensure_schema(engine)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open the store at {engine.url.render_as_string(hide_password=True)}: "
                f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                transient=isinstance(exc, OperationalError),
            ) from None
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One ORM transaction; SQLAlchemy's errors become `StoreError` (for the
        registry's own table modules: manifests, results)."""
        with _store_errors(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One Core transaction (bulk reads and writes), errors as in `session`."""
        with _store_errors(), self.engine.begin() as connection:
            yield connection

    # -- partners -------------------------------------------------------------------
    def put_partner(self, partner: Partner) -> bool:
        """Add or update a partner; True when it was new."""
        with self.session() as s:
            row = s.get(PartnerRow, partner.id)
            if row is None:
                s.add(PartnerRow(id=partner.id, name=partner.name, country=partner.country))
                return True
            row.name, row.country = partner.name, partner.country
            return False

    def get_partner(self, partner_id: str) -> Partner:
        with self.session() as s:
            row = s.get(PartnerRow, partner_id)
            if row is None:
                raise NotFoundError(
                    f"no partner {partner_id!r}; add it with 'hpcfleet partner add'"
                )
            return _partner(row)

    def list_partners(self) -> list[Partner]:
        with self.session() as s:
            rows = s.scalars(select(PartnerRow).order_by(PartnerRow.id))
            return scan(rows, _partner, lambda r: ("partner", r.id, r.id)).logged()

    # -- sites ----------------------------------------------------------------------
    def put_site(self, site: Site, actor: str) -> bool:
        """Add or update a site as partner `actor`; True when it was new."""
        self.get_partner(site.partner)
        with self.session() as s:
            row = s.get(SiteRow, site.name)
            # The owner column, not the stored document: a broken document stays fixable.
            access.check_site_edit(actor, site, row.partner if row is not None else None)
            document = site.model_dump(mode="json")
            if row is None:
                s.add(SiteRow(name=site.name, partner=site.partner, document=document))
                return True
            row.document, row.partner, row.updated = document, site.partner, utcnow()
            return False

    def get_site(self, name: str) -> SiteRecord:
        with self.session() as s:
            row = s.get(SiteRow, name)
            if row is None:
                raise NotFoundError(f"no site {name!r}; see 'hpcfleet site list'")
            return _site_record(row)

    def list_sites(self) -> list[SiteRecord]:
        """Every readable site; one that no longer validates is logged and left out."""
        return self.scan_sites().logged()

    def scan_sites(self) -> Scan[SiteRecord]:
        with self.session() as s:
            rows = s.scalars(select(SiteRow).order_by(SiteRow.name))
            return scan(rows, _site_record, lambda r: ("site", r.name, r.partner))

    def remove_site(self, name: str, actor: str) -> None:
        """Remove a site as its owner; the stored document is not read (it may be broken)."""
        with self.session() as s:
            row = s.get(SiteRow, name)
            if row is None:
                raise NotFoundError(f"no site {name!r}; see 'hpcfleet site list'")
            access.check_site_remove(actor, name, row.partner)
            s.delete(row)

    # -- probes ---------------------------------------------------------------------
    def add_probe(self, probe: ProbeRecord) -> None:
        with self.session() as s:
            s.add(ProbeRow(**probe.model_dump()))

    def latest_probes(self) -> dict[str, ProbeRecord]:
        with self.session() as s:
            latest: dict[str, ProbeRecord] = {}
            for row in s.scalars(select(ProbeRow).order_by(ProbeRow.checked_at)):
                latest[row.site] = _probe_record(row)
            return latest

    # -- runs -----------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        spec: RunSpec,
        partner: str,
        files: dict[str, tuple[bytes, int]] | None = None,
    ) -> RunRecord:
        """Store a new run, its stages (PENDING) and the files that travel with it."""
        self.get_partner(partner)
        with self.session() as s:
            run = RunRow(
                run_id=run_id,
                name=spec.name,
                partner=partner,
                experiment=spec.experiment_name,
                state=RunState.PENDING.value,
                spec=spec.model_dump(mode="json"),
            )
            s.add(run)
            s.flush()
            for position, name in enumerate(spec.order):
                s.add(
                    StageRow(
                        run_id=run_id,
                        name=name,
                        position=position,
                        state=RunState.PENDING.value,
                        sites=[],
                    )
                )
            for path, (content, mode) in (files or {}).items():
                s.add(RunFileRow(run_id=run_id, path=path, content=content, mode=mode))
            s.flush()
            return _run_record(run)

    def get_run(self, run_id: str) -> RunRecord:
        with self.session() as s:
            return _run_record(_run_row(s, run_id))

    def list_runs(self) -> list[RunRecord]:
        """Every readable run (specs are validated when asked for, see RunRecord.spec)."""
        return self.scan_runs().logged()

    def scan_runs(self) -> Scan[RunRecord]:
        with self.session() as s:
            rows = s.scalars(select(RunRow).order_by(RunRow.created, RunRow.run_id))
            return scan(rows, _run_record, lambda r: ("run", r.run_id, r.partner))

    def run_files(self, run_id: str) -> dict[str, tuple[bytes, int]]:
        with self.session() as s:
            rows = s.scalars(select(RunFileRow).where(RunFileRow.run_id == run_id))
            return {r.path: (r.content, r.mode) for r in rows}

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        with self.session() as s:
            row = _run_row(s, run_id)
            _assign(row, fields)
            return _run_record(row)

    # -- stages ---------------------------------------------------------------------
    def stages(self, run_id: str) -> list[StageRecord]:
        with self.session() as s:
            rows = s.scalars(
                select(StageRow).where(StageRow.run_id == run_id).order_by(StageRow.position)
            )
            return [_stage_record(r) for r in rows]

    def update_stage(self, run_id: str, name: str, **fields: Any) -> StageRecord:
        with self.session() as s:
            row = s.get(StageRow, (run_id, name))
            if row is None:
                raise NotFoundError(f"run {run_id} has no stage {name!r}")
            _assign(row, fields)
            return _stage_record(row)

    # -- jobs -----------------------------------------------------------------------
    def add_jobs(self, jobs: Sequence[dict[str, Any]]) -> list[JobRecord]:
        """Record jobs (normally as SUBMITTING, before the submit call happens)."""
        with self.session() as s:
            rows = [JobRow(**_enum_values(job)) for job in jobs]
            s.add_all(rows)
            s.flush()
            return [_job_record(r) for r in rows]

    def update_job(self, job_id: int, **fields: Any) -> JobRecord:
        with self.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"no job record {job_id}")
            _assign(row, fields)
            return _job_record(row)

    def update_jobs(self, updates: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Apply many job updates in one transaction (one poll cycle's worth)."""
        with self.session() as s:
            for job_id, fields in updates:
                row = s.get(JobRow, job_id)
                if row is not None:
                    _assign(row, fields)

    def jobs(
        self, run_id: str, stage: str | None = None, attempt: int | None = None
    ) -> list[JobRecord]:
        with self.session() as s:
            query = select(JobRow).where(JobRow.run_id == run_id)
            if stage is not None:
                query = query.where(JobRow.stage == stage)
            if attempt is not None:
                query = query.where(JobRow.attempt == attempt)
            rows = s.scalars(query.order_by(JobRow.id))
            return [_job_record(r) for r in rows]

    def live_job_count(self, site: str) -> int:
        """Jobs (array tasks count one each) of every run that are not final on `site`."""
        final = [s.value for s in JobState if s.is_final]
        with self.session() as s:
            query = (
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.site == site, JobRow.state.not_in(final))
            )
            return int(s.scalar(query) or 0)

    def all_jobs(self) -> list[JobRecord]:
        with self.session() as s:
            return [_job_record(r) for r in s.scalars(select(JobRow).order_by(JobRow.id))]

    # -- milestones -----------------------------------------------------------------
    def put_milestone(self, milestone: Milestone, actor: str) -> bool:
        self.get_partner(actor)
        with self.session() as s:
            row = s.get(MilestoneRow, milestone.id)
            access.check_milestone_edit(actor, milestone.id, row.owner if row else None)
            document = milestone.model_dump(mode="json")
            if row is None:
                s.add(MilestoneRow(id=milestone.id, owner=actor, document=document))
                return True
            row.document = document
            return False

    def list_milestones(self) -> list[MilestoneRecord]:
        with self.session() as s:
            rows = s.scalars(select(MilestoneRow).order_by(MilestoneRow.id))
            return scan(rows, _milestone_record, lambda r: ("milestone", r.id, r.owner)).logged()


def _enum_values(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, JobState | RunState) else v) for k, v in fields.items()}


def _assign(row: Any, fields: dict[str, Any]) -> None:
    for key, value in _enum_values(fields).items():
        if not hasattr(row, key):
            raise AttributeError(f"{type(row).__name__} has no field {key!r}")
        setattr(row, key, value)


def _run_row(s: Session, run_id: str) -> RunRow:
    row = s.get(RunRow, run_id)
    if row is None:
        raise NotFoundError(f"no run {run_id!r}; see 'hpcfleet run list'")
    return row


def _partner(row: PartnerRow) -> Partner:
    document = {"id": row.id, "name": row.name, "country": row.country}
    return validate_stored(document, Partner, "partner", row.id)


def _site_record(row: SiteRow) -> SiteRecord:
    return SiteRecord(
        site=validate_stored(row.document, Site, "site", row.name),
        created=row.created,
        updated=row.updated,
    )


def _milestone_record(row: MilestoneRow) -> MilestoneRecord:
    milestone = validate_stored(row.document, Milestone, "milestone", row.id)
    return MilestoneRecord(milestone=milestone, owner=row.owner, created=row.created)


def _probe_record(row: ProbeRow) -> ProbeRecord:
    return ProbeRecord(
        site=row.site,
        checked_at=row.checked_at,
        reachable=row.reachable,
        ok=row.ok,
        queue_depth=row.queue_depth,
        details=row.details or {},
    )


def _run_state(row: RunRow) -> RunState:
    try:
        return RunState(row.state)
    except ValueError:
        raise DocumentError(
            f"{row.state!r} is not a run state", source=f"stored run {row.run_id}"
        ) from None


def _run_record(row: RunRow) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        name=row.name,
        partner=row.partner,
        experiment=row.experiment,
        state=_run_state(row),
        reason=row.reason,
        created=row.created,
        started=row.started,
        ended=row.ended,
        mlflow_run_id=row.mlflow_run_id,
        prefect_flow_run_id=row.prefect_flow_run_id,
        cancel_requested=bool(row.cancel_requested),
        orchestrator=row.orchestrator,
        heartbeat=row.heartbeat,
        spec=row.spec,
        site_documents=row.site_documents or {},
    )


def _stage_record(row: StageRow) -> StageRecord:
    return StageRecord(
        run_id=row.run_id,
        name=row.name,
        state=RunState(row.state),
        sites=row.sites or [],
        attempt=row.attempt,
        reason=row.reason,
        choice=row.choice,
        started=row.started,
        ended=row.ended,
    )


def _job_record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        run_id=row.run_id,
        stage=row.stage,
        attempt=row.attempt,
        site=row.site,
        job_name=row.job_name,
        scheduler_id=row.scheduler_id,
        array_index=row.array_index,
        array_value=row.array_value,
        state=JobState(row.state),
        exit_code=row.exit_code,
        reason=row.reason,
        submitted=row.submitted,
        started=row.started,
        ended=row.ended,
        gpu_hours=row.gpu_hours or 0.0,
        node=row.node,
        mlflow_run_id=row.mlflow_run_id,
        stdout_path=row.stdout_path,
        stderr_path=row.stderr_path,
        checkpoint=row.checkpoint,
    )


def now() -> datetime:
    """The store's clock (UTC-aware)."""
    return utcnow()
