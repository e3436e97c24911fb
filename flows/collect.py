"""Bringing an attempt's results home: metrics and logs into MLflow child runs, array
results onto the parent run, failure reasons from the job's stderr into the store."""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from flows import staging
from flows.context import RunContext
from flows.credentials import renewal_wait
from flows.lineage import remember_outputs
from flows.metrics import (
    ARRAY_VALUE_TAG,
    MetricPoint,
    MetricsFileTooLarge,
    ParsedMetrics,
    key_part,
    parent_cell_key,
    parent_metric_key,
    parse_metrics,
    read_metrics_file,
)
from flows.results import store_job_results
from flows.retry import with_retries
from flows.tracking import MLFLOW_STATUS
from registry.checkpoints import checkpoint_step
from registry.records import JobRecord
from registry.results import StoredResult
from registry.states import JobState
from sites.errors import SiteError
from sites.login.commands import is_login_job_id

log = logging.getLogger(__name__)

STDERR_REASON_CHARS = 300
# A job's log goes to MLflow whole up to this size; beyond it, only its last
# LOG_UPLOAD_MAX_BYTES are uploaded, after a first line saying so.
LOG_UPLOAD_MAX_BYTES = 8 * 1024 * 1024


def collect_attempt(ctx: RunContext, stage: str, attempt: int, jobs: list[JobRecord]) -> None:
    """Record every finished job of the attempt that was not recorded yet."""
    pending = [j for j in jobs if j.state.is_final and j.mlflow_run_id is None]
    by_site: dict[str, list[JobRecord]] = defaultdict(list)
    for job in pending:
        by_site[job.site].append(job)
    for site, site_jobs in by_site.items():
        # One directory per attempt: a for_each stage collects several attempts at once.
        local = ctx.scratch / stage / site / str(attempt)
        try:
            fetched = with_retries(
                partial(
                    staging.fetch_attempt, ctx.driver(site), ctx.layout(site, stage), attempt, local
                ),
                f"fetching logs of {stage} from {site}",
                renewal=renewal_wait(ctx, stage),
            )
        except SiteError as exc:
            log.warning(
                "could not fetch logs of %s attempt %d from %s: %s", stage, attempt, site, exc
            )
            fetched = local / f"attempt-{attempt}"
            shutil.rmtree(fetched, ignore_errors=True)  # nothing half-fetched is read
            fetched.mkdir(parents=True, exist_ok=True)
        results: list[StoredResult] = []
        parent = _ParentResults()
        for job in site_jobs:
            results += _record_job(ctx, job, fetched, parent)
        # The site's whole batch in one round of requests (for the parent, then for each
        # checkpoint), not one per job: a matrix has 10^4 cells.
        parent.log(ctx)
        ctx.checkpoint_runs().log(stage, results)
        shutil.rmtree(local, ignore_errors=True)


@dataclass
class _ParentResults:
    """Array results of a batch of jobs, for the parent run."""

    points: list[MetricPoint] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def log(self, ctx: RunContext) -> None:
        with ctx.parent_lock:
            if self.tags:
                ctx.tracker.set_tags(ctx.parent_mlflow_id, self.tags)
            if self.points:
                ctx.tracker.log_metrics(ctx.parent_mlflow_id, self.points)


def _record_job(
    ctx: RunContext, job: JobRecord, fetched: Path, parent: _ParentResults
) -> list[StoredResult]:
    """Record one finished job (its array results go to `parent`); returns the results
    stored for it."""
    metrics_file = fetched / "metrics" / f"{job.array_index or 0}.jsonl"
    try:
        metrics_text = read_metrics_file(metrics_file)
        parsed = parse_metrics(metrics_text)
    except MetricsFileTooLarge as exc:
        metrics_text, parsed = "", ParsedMetrics([], [str(exc)])
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
    if (
        ctx.sites[job.site].scheduler == "slurm"
        and job.scheduler_id
        and not is_login_job_id(job.scheduler_id)
    ):
        tags["slurm.job_id"] = job.scheduler_id
    if job.array_value is not None:
        tags[ARRAY_VALUE_TAG] = job.array_value
    if job.checkpoint is not None:
        tags["hpcfleet.checkpoint"] = job.checkpoint
    if job.exit_code is not None:
        tags["hpcfleet.exit_code"] = str(job.exit_code)
    if reason:
        tags["hpcfleet.reason"] = reason[:500]
    if parsed.rejected:  # skipped lines are recorded on the run, never fail it
        tags["hpcfleet.metrics_skipped"] = "; ".join(parsed.rejected[:5])[:2000]
    suffix = f"[{job.array_value}]" if job.array_value is not None else ""
    suffix += f"@{job.checkpoint}" if job.checkpoint is not None else ""
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
        if (logs_dir / name).is_file():
            ctx.tracker.log_artifact(child, capped_log(logs_dir / name), "logs")
    ctx.tracker.finish(child, MLFLOW_STATUS.get(_stage_like(job.state), "FAILED"))
    # Before the job is marked collected: a collection redone after a crash replaces them.
    results = store_job_results(ctx.store, ctx.spec.stage(job.stage), job, metrics_text)
    ctx.store.update_job(job.id, mlflow_run_id=child, reason=reason)

    if job.array_value is not None and job.state is JobState.COMPLETED:
        cells = ctx.spec.stage(job.stage).cells
        index = job.array_index
        values = parsed.last_values()
        # Per checkpoint, the parent's value of a cell is a history over the checkpoints'
        # steps: its latest (what milestones and the runs table read) is the newest
        # checkpoint's, in whatever order their evaluations ended.
        step = (checkpoint_step(job.checkpoint) or 0) if job.checkpoint else 0
        if index is not None and index < len(cells) and len(cells[index]) > 1:
            # A matrix cell's results as `<key>/<v1>/<v2>/...` (`acc/fi/belebele/5`).
            cell_values = list(cells[index].values())
            parent.points += [
                MetricPoint(parent_cell_key(k, cell_values), v, step) for k, v in values.items()
            ]
        else:
            _array_results(parent, job.array_value, values, step)
    return results


def _array_results(
    parent: _ParentResults, array_value: str, values: dict[str, float], step: int = 0
) -> None:
    """`<key>/<value>` on the parent; a value MLflow would refuse in a key is escaped
    there, the original kept in the parent's tag `hpcfleet.array_value/<escaped>`."""
    parent.points += [
        MetricPoint(parent_metric_key(k, array_value), v, step) for k, v in values.items()
    ]
    if key_part(array_value) != array_value:
        parent.tags[parent_metric_key(ARRAY_VALUE_TAG, array_value)] = array_value


def record_outputs(ctx: RunContext, stage: str) -> None:
    """The declared outputs of a completed stage, with sizes and sha256, on the parent run
    (`outputs/<stage>/<site>.json`), so anyone can check what a later copy holds."""
    declared = ctx.spec.stage(stage).outputs
    for site in ctx.plans[stage].sites:
        entries = staging.manifest(ctx.driver(site), ctx.layout(site, stage).outputs, declared)
        remember_outputs(ctx, stage, site, {p: (e.size, e.sha256) for p, e in entries.items()})
        document = {
            "run_id": ctx.run_id,
            "stage": stage,
            "site": site,
            "files": [
                {"path": p, "size": entry.size, "sha256": entry.sha256}
                for p, entry in sorted(entries.items())
            ],
        }
        path = ctx.scratch / f"{stage}-{site}-manifest" / f"{site}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))
        ctx.tracker.log_artifact(ctx.parent_mlflow_id, path, f"outputs/{stage}")


def capped_log(path: Path, max_bytes: int = LOG_UPLOAD_MAX_BYTES) -> Path:
    """`path` itself if it is at most `max_bytes`; else a file of the same name (in a
    sibling directory) holding a note that it was cut, then the log's last `max_bytes`."""
    size = path.stat().st_size
    if size <= max_bytes:
        return path
    cut = path.parent.with_name(f"{path.parent.name}-cut") / path.name
    cut.parent.mkdir(exist_ok=True)
    with path.open("rb") as source, cut.open("wb") as target:
        target.write(
            f"[hpcfleet: this log was cut: {size} bytes, only the last {max_bytes} are kept "
            f"(LOG_UPLOAD_MAX_BYTES)]\n".encode()
        )
        source.seek(size - max_bytes)
        shutil.copyfileobj(source, target)
    return cut


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
