"""What the store returns: plain records of stored rows (JSON-ready via pydantic)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, PrivateAttr

from registry.listing import BrokenRow as BrokenRow  # where the store's scans find it
from registry.loading import validate_document
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
    checkpoint: str | None = None  # what a `for_each: checkpoint` stage's job runs on

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
    # Site name -> the site document (JSON) the run was driven with: its jobs stay
    # reachable (watch, cancel) through it after the site leaves the registry.
    site_documents: dict[str, dict[str, Any]] = {}

    # The spec is validated when first asked for, not when the row is read: `run list`
    # needs none of it, and a 100,000-value array costs more than the rest of the row.
    _spec: RunSpec | None = PrivateAttr(default=None)
    _spec_document: Mapping[str, Any] | None = PrivateAttr(default=None)

    def __init__(self, *, spec: RunSpec | Mapping[str, Any], **fields: Any) -> None:
        super().__init__(**fields)
        if isinstance(spec, RunSpec):
            self._spec = spec
        else:
            self._spec_document = spec

    @property
    def spec(self) -> RunSpec:
        """The run's spec; a stored one that no longer validates raises DocumentError
        naming the run (exit 2), for this run only."""
        if self._spec is None:
            self._spec = validate_document(
                self._spec_document, RunSpec, source=f"stored run {self.run_id}"
            )
        return self._spec


class MilestoneRecord(BaseModel):
    milestone: Milestone
    owner: str
    created: datetime
