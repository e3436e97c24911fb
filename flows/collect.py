"""Bringing an attempt's results home: metrics and logs into MLflow child runs, array
results onto the parent run, failure reasons from the job's stderr into the store."""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from functools import partial
from pathlib import Path

from flows import staging
from flows.context import RunContext
from flows.lineage import remember_outputs
from flows.metrics import MetricPoint, parse_metrics
from flows.retry import with_retries
from flows.tracking import MLFLOW_STATUS
from registry.records import JobRecord
from registry.states import JobState
from sites.errors import SiteError

log = logging.getLogger(__name__)

STDERR_REASON_CHARS = 300


def collect_attempt(ctx: RunContext, stage: str, attempt: int, jobs: list[JobRecord]) -> None:
    """Record every finished job of the attempt that was not recorded yet."""
    pending = [j for j in jobs if j.state.is_final and j.mlflow_run_id is None]
    by_site: dict[str, list[JobRecord]] = defaultdict(list)
    for job in pending:
        by_site[job.site].append(job)
    for site, site_jobs in by_site.items():
        local = ctx.scratch / stage / site
        try:
            fetched = with_retries(
                partial(
                    staging.fetch_attempt, ctx.driver(site), ctx.layout(site, stage), attempt, local
                ),
                f"fetching logs of {stage} from {site}",
            )
        except SiteError as exc:
            log.warning(
                "could not fetch logs of %s attempt %d from %s: %s", stage, attempt, site, exc
            )
            fetched = local / f"attempt-{attempt}"
            fetched.mkdir(parents=True, exist_ok=True)
        for job in site_jobs:
            _record_job(ctx, job, fetched)
        shutil.rmtree(local, ignore_errors=True)


def _record_job(ctx: RunContext, job: JobRecord, fetched: Path) -> None:
    metrics_file = fetched / "metrics" / f"{job.array_index or 0}.jsonl"
    text = metrics_file.read_text(errors="replace") if metrics_file.exists() else ""
    parsed = parse_metrics(text)
    for problem in parsed.rejected[:5]:
        log.warning("%s: metrics %s", job.job_name, problem)
    log_names = [Path(p).name for p in (job.stdout_path, job.stderr_path) if p]
    reason = job.reason
    if job.state is JobState.FAILED or (job.state is not JobState.COMPLETED and not reason):
        # A failed job's own last words say more than the scheduler's "exit code 3".
        tail = _last_line(fetched / "logs" / log_names[-1]) if log_names else None
        reason = tail or reason

    tags = ctx.base_tags(job.stage, job.site, job.attempt)
    tags["hpcfleet.job_id"] = job.scheduler_id or ""
    tags["hpcfleet.state"] = job.state.value
    if ctx.sites[job.site].scheduler == "slurm" and job.scheduler_id:
        tags["slurm.job_id"] = job.scheduler_id
    if job.array_value is not None:
        tags["hpcfleet.array_value"] = job.array_value
    if job.exit_code is not None:
        tags["hpcfleet.exit_code"] = str(job.exit_code)
    if reason:
        tags["hpcfleet.reason"] = reason[:500]
    suffix = f"[{job.array_value}]" if job.array_value is not None else ""
    child = ctx.tracker.start_run(
        ctx.experiment_id, f"{job.stage}{suffix} #{job.attempt}", tags, parent=ctx.parent_mlflow_id
    )
    points = list(parsed.points)
    points.append(MetricPoint("gpu_hours", job.gpu_hours))
    if job.duration_seconds is not None:
        points.append(MetricPoint("duration_seconds", job.duration_seconds))
    ctx.tracker.log_metrics(child, points)
    logs_dir = fetched / "logs"
    for name in log_names:
        if (logs_dir / name).exists():
            ctx.tracker.log_artifact(child, logs_dir / name, "logs")
    ctx.tracker.finish(child, MLFLOW_STATUS.get(_stage_like(job.state), "FAILED"))
    ctx.store.update_job(job.id, mlflow_run_id=child, reason=reason)

    if job.array_value is not None and job.state is JobState.COMPLETED:
        values = parsed.last_values()
        with ctx.parent_lock:
            ctx.tracker.log_metrics(
                ctx.parent_mlflow_id,
                [MetricPoint(f"{key}/{job.array_value}", value) for key, value in values.items()],
            )


def record_outputs(ctx: RunContext, stage: str) -> None:
    """The declared outputs of a completed stage, with sizes and sha256, on the parent run
    (`outputs/<stage>/<site>.json`), so anyone can check what a later copy holds."""
    declared = ctx.spec.stage(stage).outputs
    for site in ctx.plans[stage].sites:
        entries = staging.manifest(ctx.driver(site), ctx.layout(site, stage).outputs, declared)
        remember_outputs(ctx, stage, site, entries)
        document = {
            "run_id": ctx.run_id,
            "stage": stage,
            "site": site,
            "files": [
                {"path": p, "size": size, "sha256": digest}
                for p, (size, digest) in sorted(entries.items())
            ],
        }
        path = ctx.scratch / f"{stage}-{site}-manifest" / f"{site}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))
        ctx.tracker.log_artifact(ctx.parent_mlflow_id, path, f"outputs/{stage}")


def _stage_like(state: JobState) -> str:
    if state is JobState.COMPLETED:
        return "COMPLETED"
    return "CANCELLED" if state is JobState.CANCELLED else "FAILED"


def _last_line(path: Path) -> str | None:
    if not path.exists():
        return None
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 4096))
        tail = handle.read().decode(errors="replace")
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:STDERR_REASON_CHARS] if lines else None
