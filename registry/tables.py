"""SQLAlchemy table definitions of the registry and run store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class PartnerRow(Base):
    __tablename__ = "partners"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SiteRow(Base):
    __tablename__ = "sites"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    partner: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProbeRow(Base):
    __tablename__ = "probes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(63), index=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reachable: Mapped[bool] = mapped_column(Boolean)
    ok: Mapped[bool] = mapped_column(Boolean)
    queue_depth: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    partner: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    experiment: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    orchestrator: Mapped[str | None] = mapped_column(String(200))  # host:pid driving it
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # site name -> the site document the run was driven with (see RunRecord)
    site_documents: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RunFileRow(Base):
    """Files next to the spec that travel with the run's stages."""

    __tablename__ = "run_files"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    mode: Mapped[int] = mapped_column(Integer, default=0o644)


class StageRow(Base):
    __tablename__ = "stages"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    sites: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    choice: Mapped[str | None] = mapped_column(Text)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobRow(Base):
    """One scheduler job, or one task of an array, of one stage attempt on one site."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_run_stage", "run_id", "stage", "attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    stage: Mapped[str] = mapped_column(String(63))
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(63), index=True)
    job_name: Mapped[str] = mapped_column(String(200))
    scheduler_id: Mapped[str | None] = mapped_column(String(64))
    array_index: Mapped[int | None] = mapped_column(Integer)
    array_value: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    submitted: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    node: Mapped[str | None] = mapped_column(String(200))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)
    # The checkpoint a `for_each: checkpoint` stage's job runs on; None for other stages.
    checkpoint: Mapped[str | None] = mapped_column(String(200))


class ResultRow(Base):
    """One metric of one evaluation cell, as a job's result line reported it (the last
    value per metric and cell). `cell` holds the coordinates ({language: fi, ...});
    `checkpoint` is empty until checkpoints stream out of a training stage."""

    __tablename__ = "results"
    __table_args__ = (Index("ix_results_run_stage", "run_id", "stage"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    stage: Mapped[str] = mapped_column(String(63))
    job_id: Mapped[int] = mapped_column(Integer, index=True)  # jobs.id of the job that wrote it
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(63))
    array_index: Mapped[int | None] = mapped_column(Integer)
    checkpoint: Mapped[str] = mapped_column(String(500), default="")
    cell: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    metric: Mapped[str] = mapped_column(String(250))
    value: Mapped[float] = mapped_column(Float)


class CheckpointRow(Base):
    """A finished checkpoint a running stage wrote, recorded once per (run, stage, name):
    where it is (relative to the stage's outputs, on `site`) and its ready file's size
    and sha256 when it was first seen."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "stage", "name", name="uq_checkpoints_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    stage: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    site: Mapped[str] = mapped_column(String(63))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    found: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MilestoneRow(Base):
    __tablename__ = "milestones"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ManifestRow(Base):
    """One file of a stage's outputs on one site: path, size and sha256, as hashed when
    the outputs were collected. Lineage and provenance read these; data never lands here."""

    __tablename__ = "manifests"
    __table_args__ = (Index("ix_manifests_run_stage", "run_id", "stage"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    stage: Mapped[str] = mapped_column(String(63))
    site: Mapped[str] = mapped_column(String(63))
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LaunchFactsRow(Base):
    """What the launching machine knew of a run's spec: its git commit and dirty flag."""

    __tablename__ = "launch_facts"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class ImageDigestRow(Base):
    """A container image's sha256, hashed once on its site; a new size or mtime is a new
    image."""

    __tablename__ = "image_digests"
    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mtime: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
