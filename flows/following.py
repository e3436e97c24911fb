"""Following submitted jobs until they are final, and cancelling live ones.

Step of a run's life: each attempt of a stage, between submission (`flows.submission`)
and collection (`flows.collect`). The per-site watchers (`flows.watcher`) poll each
site once for all its jobs; `follow` waits for their changes and writes every change
of state, node, exit code, times and GPU-hours to the store. A job the scheduler has
never reported, or stopped reporting, for `LOST_AFTER_SECONDS` ends NODE_FAIL. A cancel
request on the run cancels the live jobs, whose final states are then followed too.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import partial

from flows.context import RunContext
from flows.credentials import FollowingWait
from flows.ledger import with_estimated_gpu_hours
from flows.watcher import SiteWatcher
from registry.records import JobRecord
from registry.states import JobState
from registry.store import now
from sites.errors import SiteError
from sites.scheduler import JobStatus

log = logging.getLogger(__name__)

# A job the scheduler has never reported, or stopped reporting, for this long is lost.
LOST_AFTER_SECONDS = 600.0


def follow(ctx: RunContext, jobs: list[JobRecord]) -> list[JobRecord]:
    """Follow the jobs until all are final, writing every change to the store; return
    them as they ended."""
    current = {j.id: j for j in jobs}
    live = {j.id: j for j in jobs if not j.state.is_final and j.scheduler_id}
    watchers: dict[str, SiteWatcher] = {}
    for job in live.values():
        watcher = watchers.setdefault(job.site, ctx.watchers.get(ctx.driver(job.site)))
        watcher.track([job.scheduler_id or ""])
    lost_after = {j.id: time.monotonic() + LOST_AFTER_SECONDS for j in live.values()}
    cancelling = False
    expired = FollowingWait(ctx)
    try:
        while live:
            _wait_for_changes(watchers, live)
            expired.update(watchers, live.values(), lost_after, LOST_AFTER_SECONDS)
            if not cancelling and ctx.cancel_requested():
                cancelling = True
                cancel_live(ctx, list(live.values()))
            updates = _take_changes(watchers, live, current, lost_after, ctx)
            if updates:
                ctx.store.update_jobs(updates)
    finally:
        for job in jobs:
            if job.scheduler_id and job.site in watchers:
                watchers[job.site].untrack([job.scheduler_id])
    return list(current.values())


def _wait_for_changes(watchers: dict[str, SiteWatcher], live: dict[int, JobRecord]) -> None:
    """Block until a site reports a change for a live job (or one poll interval)."""
    for site, watcher in watchers.items():
        ids = {j.scheduler_id for j in live.values() if j.site == site}
        if ids:
            watcher.wait(
                partial(has_changed, ids=ids, live=live), timeout=max(1.0, watcher.interval)
            )


def _take_changes(
    watchers: dict[str, SiteWatcher],
    live: dict[int, JobRecord],
    current: dict[int, JobRecord],
    lost_after: dict[int, float],
    ctx: RunContext | None = None,
) -> list[tuple[int, dict[str, object]]]:
    """The store updates the latest statuses call for; `live` and `current` follow
    them (a job leaves `live` once final)."""
    updates = []
    never: list[JobRecord] = []  # cancelled together: one scancel per site, not per task
    for job_id, job in list(live.items()):
        status = watchers[job.site].snapshot().get(job.scheduler_id or "")
        if status is None:
            if time.monotonic() <= lost_after[job_id]:
                continue
            status = JobStatus(
                job.scheduler_id or "",
                JobState.NODE_FAIL,
                reason="the scheduler no longer knows this job",
            )
        if status.state is JobState.PENDING and status.never_starts and ctx is not None:
            # Waiting would be for ever: end it now, saying what to change.
            never.append(job)
            status = JobStatus(status.job_id, JobState.FAILED, reason=status.never_starts)
        if ctx is not None:
            status = _with_gpu_estimate(ctx, job, status)
        fields = status_fields(job, status)
        if fields:
            updates.append((job_id, fields))
            current[job_id] = job.model_copy(update=fields)
            live[job_id] = current[job_id]
        if status.state.is_final:
            del live[job_id]
    if never and ctx is not None:
        cancel_live(ctx, never)
    return updates


def _with_gpu_estimate(ctx: RunContext, job: JobRecord, status: JobStatus) -> JobStatus:
    """GPU-hours from the planned partition for a stage that asked for GPUs, where the
    site's accounting reports none."""
    site, resources = ctx.driver(job.site).site, ctx.spec.stage(job.stage).resources
    if site.slurm is None or not resources.gpus:
        return status
    partition = ctx.plans[job.stage].partitions.get(job.site)
    gpus = next((g for name, g, _ in site.gpu_partitions() if name == partition), 0)
    return with_estimated_gpu_hours(status, gpus, resources.nodes, partition)


def has_changed(
    latest: dict[str, JobStatus], ids: set[str | None], live: dict[int, JobRecord]
) -> bool:
    """Whether `latest` reports a new known state for one of the live jobs in `ids`."""
    for job in live.values():
        status = latest.get(job.scheduler_id or "")
        if (
            job.scheduler_id in ids
            and status is not None
            and status.state not in (job.state, JobState.UNKNOWN)
        ):
            return True
    return False


def status_fields(job: JobRecord, status: JobStatus) -> dict[str, object]:
    """The fields of the stored job that `status` changes. UNKNOWN never overwrites a
    known state; a final job without an end time from the scheduler ends now."""
    fields: dict[str, object] = {}
    if status.state is not job.state and status.state is not JobState.UNKNOWN:
        fields["state"] = status.state
    for key in ("exit_code", "started", "ended", "node", "reason"):
        value = getattr(status, key)
        if value is not None and value != getattr(job, key):
            fields[key] = value
    if status.gpu_hours and status.gpu_hours != job.gpu_hours:
        fields["gpu_hours"] = status.gpu_hours
    if status.state.is_final and "ended" not in fields and job.ended is None:
        fields["ended"] = now()
    return fields


def cancel_live(ctx: RunContext, jobs: Sequence[JobRecord]) -> None:
    """Ask each site to cancel the jobs it knows; a site that fails is logged, not fatal."""
    by_site: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        if job.scheduler_id:
            by_site[job.site].append(job.scheduler_id)
    for site, ids in by_site.items():
        try:
            ctx.driver(site).scheduler.cancel(ids)
        except SiteError as exc:
            log.warning("cancelling jobs on %s failed: %s", site, exc)
