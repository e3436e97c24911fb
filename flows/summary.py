"""What a run produced, per stage: sites, state, duration and key metrics from MLflow."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from registry.records import JobRecord, RunRecord, StageRecord

HIDDEN_METRICS = {"gpu_hours", "duration_seconds"}


@dataclass
class StageSummary:
    name: str
    state: str
    sites: list[str]
    attempts: int
    tasks_done: int
    tasks_total: int
    duration_seconds: float | None
    gpu_hours: float
    metrics: dict[str, float] = field(default_factory=dict)  # key -> value (mean for arrays)
    metric_counts: dict[str, int] = field(default_factory=dict)
    metric_mins: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


def summarize(
    run: RunRecord,
    stages: list[StageRecord],
    jobs: list[JobRecord],
    children: list[Any] = (),  # type: ignore[assignment]
) -> list[StageSummary]:
    """Join stage records, job records and MLflow child runs into one row per stage."""
    per_stage: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for child in children:
        tags = child.data.tags
        if tags.get("hpcfleet.state") != "COMPLETED":
            continue
        stage = tags.get("hpcfleet.stage", "")
        for key, value in child.data.metrics.items():
            if key not in HIDDEN_METRICS:
                per_stage[stage][key].append(float(value))
    rows = []
    for stage in stages:
        stage_jobs = [j for j in jobs if j.stage == stage.name]
        # A task is a cell on a site, per checkpoint for a `for_each: checkpoint` stage.
        latest: dict[tuple[str, str | None, int | None], JobRecord] = {}
        tries: dict[tuple[str, str | None, int | None], int] = defaultdict(int)
        for job in stage_jobs:
            key = (job.site, job.checkpoint, job.array_index)
            latest[key] = job
            tries[key] += 1
        # Each checkpoint's array of a for_each stage counts as an attempt of the stage:
        # what a reader wants is how often a task had to be tried.
        for_each = run.spec.stage(stage.name).for_each is not None
        started = [j.started for j in stage_jobs if j.started]
        ended = [j.ended for j in stage_jobs if j.ended]
        duration = (max(ended) - min(started)).total_seconds() if started and ended else None
        metrics = per_stage.get(stage.name, {})
        rows.append(
            StageSummary(
                name=stage.name,
                state=stage.state.value,
                sites=stage.sites,
                attempts=max(tries.values(), default=1) if for_each else stage.attempt,
                tasks_done=sum(j.state.value == "COMPLETED" for j in latest.values()),
                tasks_total=len(latest) or len(run.spec.stage(stage.name).array_values) or 1,
                duration_seconds=duration,
                gpu_hours=sum(j.gpu_hours for j in stage_jobs),
                metrics={k: fmean(v) for k, v in metrics.items()},
                metric_counts={k: len(v) for k, v in metrics.items()},
                metric_mins={k: min(v) for k, v in metrics.items()},
                reason=stage.reason,
            )
        )
    return rows
