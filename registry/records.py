"""What the store returns: plain records of stored rows (JSON-ready via pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from registry.milestone import Milestone
from registry.runspec import RunSpec
from registry.site import Site
from registry.states import JobState, RunState


class SiteRecord(BaseModel):
    site: Site
    created: datetime
    updated: datetime


class ProbeRecord(BaseModel):
    site: str
    checked_at: datetime
    reachable: bool
    ok: bool
    queue_depth: int | None = None
    details: dict[str, Any] = {}


class JobRecord(BaseModel):
    id: int
    run_id: str
    stage: str
    attempt: int
    site: str
    job_name: str
    scheduler_id: str | None
    array_index: int | None
    array_value: str | None
    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    submitted: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    gpu_hours: float = 0.0
    node: str | None = None
    mlflow_run_id: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.started and self.ended:
            return (self.ended - self.started).total_seconds()
        return None


class StageRecord(BaseModel):
    run_id: str
    name: str
    state: RunState
    sites: list[str] = []
    attempt: int = 0
    reason: str | None = None
    choice: str | None = None  # why these sites were chosen
    started: datetime | None = None
    ended: datetime | None = None


class RunRecord(BaseModel):
    run_id: str
    name: str
    partner: str
    experiment: str
    state: RunState
    reason: str | None = None
    created: datetime
    started: datetime | None = None
    ended: datetime | None = None
    mlflow_run_id: str | None = None
    prefect_flow_run_id: str | None = None
    cancel_requested: bool = False
    orchestrator: str | None = None
    heartbeat: datetime | None = None
    spec: RunSpec
    # Site name -> the site document (JSON) the run was driven with: its jobs stay
    # reachable (watch, cancel) through it after the site leaves the registry.
    site_documents: dict[str, dict[str, Any]] = {}


class MilestoneRecord(BaseModel):
    milestone: Milestone
    owner: str
    created: datetime
