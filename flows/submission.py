"""The submission protocol: record -> submit -> adopt after a lost answer -> reattach.

Step of a run's life: each attempt of a stage, after its inputs are staged and before
its jobs are followed (`flows.following`). The store is the source of truth: every job
is recorded before the submit call (state SUBMITTING, no scheduler id) and after it
(with the id), so that a restarted orchestrator reattaches to live jobs, or finds a
job it submitted just before dying by its deterministic name, instead of submitting
it twice. A site's `policy.max_queued_jobs` is respected before recording; a transient
submit failure is retried, but only after looking the job up by name (the lost answer
of a submit may hide a queued job). A site whose QOS or association job submit limit
is reached is not failing: the job waits and is submitted once the queue has room.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial

from flows import staging
from flows.context import RunContext
from flows.credentials import RenewalWait, renewal_wait
from flows.jobs import build_request, job_name
from flows.retry import with_retries
from flows.segments import SegmentPlace, segment_request
from flows.tasks import PlannedTask
from registry.records import JobRecord
from registry.states import JobState
from registry.store import now
from sites import remote
from sites.driver import SiteDriver
from sites.errors import CredentialsExpired, SchedulerError, SiteError, SubmitLimitReached
from sites.scheduler import JobRequest, job_id_order

log = logging.getLogger(__name__)

SUBMIT_TRIES = 3


def submit_tasks(
    ctx: RunContext,
    name: str,
    attempt: int,
    tasks: Sequence[PlannedTask],
    after_ok: tuple[str, ...] = (),
    avoid: dict[str, set[str]] | None = None,
    segment: SegmentPlace | None = None,
    checkpoint: tuple[str, Mapping[str, str]] | None = None,
) -> list[JobRecord]:
    """Submit one job (array) per site; each recorded before and after the submit call.

    `avoid` names, per site, nodes to exclude (where earlier attempts failed);
    `segment`, where the job stands in a chain of segments (`flows.segment_runner`);
    `checkpoint`, the name of the checkpoint a `for_each` stage runs on, and its path
    on each site. A site that refuses the job leaves its tasks FAILED ("not submitted:
    ...").
    """
    ctx.store.update_stage(ctx.run_id, name, attempt=attempt)
    by_site: dict[str, list[PlannedTask]] = defaultdict(list)
    for task in tasks:
        by_site[task.site].append(task)
    records: list[JobRecord] = []
    for site, site_tasks in by_site.items():
        exclude = sorted((avoid or {}).get(site, ()))
        on = (checkpoint[0], checkpoint[1][site]) if checkpoint is not None else None
        request = _request(ctx, name, attempt, site, site_tasks, after_ok, exclude, on)
        if segment is not None:
            request = segment_request(request, ctx.layout(site, name), attempt, segment)
        # A follow-up segment over a submit limit is not queued (the chain is shorter):
        # waiting for room would hold up following the segments before it.
        wait = segment is None or not segment.earlier_ids
        records.extend(
            _submit_recorded(
                ctx, name, attempt, site, site_tasks, request, wait, on and on[0]
            )
        )
    return records


def _request(
    ctx: RunContext,
    name: str,
    attempt: int,
    site: str,
    tasks: list[PlannedTask],
    after_ok: tuple[str, ...],
    exclude_nodes: list[str],
    checkpoint: tuple[str, str] | None = None,
) -> JobRequest:
    """The attempt's job on `site`, its directories prepared."""
    driver, layout = ctx.driver(site), ctx.layout(site, name)
    with_retries(
        partial(staging.prepare_dirs, driver, layout, attempt),
        f"preparing {name} on {site}",
        renewal=renewal_wait(ctx, name),
    )
    share = [(t.index, t.value) for t in tasks if t.index is not None and t.value is not None]
    request = build_request(
        ctx.spec,
        ctx.spec.stage(name),
        driver.site,
        run_id=ctx.run_id,
        attempt=attempt,
        layout=layout,
        partition=ctx.plans[name].partitions.get(site),
        qos=ctx.plans[name].qos.get(site),
        share=share,
        after_ok=after_ok,
        exclude_nodes=exclude_nodes,
        checkpoint=checkpoint,
    )
    return replace(request, link_inputs=_chained_inputs(ctx, name, site) if after_ok else ())


def _chained_inputs(ctx: RunContext, name: str, site: str) -> tuple[tuple[str, str], ...]:
    """A job queued (afterok) behind needs on its own site links their outputs when it
    starts: staged before, they were not final yet."""
    layout = ctx.layout(site, name)
    return tuple(
        (ctx.layout(site, need).outputs, layout.input_of(need))
        for need in ctx.spec.stage(name).needs
        if ctx.plans[need].sites == (site,)
    )


def _submit_recorded(
    ctx: RunContext,
    name: str,
    attempt: int,
    site: str,
    tasks: list[PlannedTask],
    request: JobRequest,
    wait_for_room: bool = True,
    checkpoint: str | None = None,
) -> list[JobRecord]:
    """Record the tasks SUBMITTING, submit, then record the ids (or why it failed)."""
    driver = ctx.driver(site)
    with ctx.submit_lock(site):
        respect_queue_limit(ctx, driver, len(tasks))
        rows = ctx.store.add_jobs(
            [
                {
                    "run_id": ctx.run_id,
                    "stage": name,
                    "attempt": attempt,
                    "site": site,
                    "job_name": request.name,
                    "scheduler_id": None,
                    "array_index": t.index,
                    "array_value": t.value,
                    "state": JobState.SUBMITTING,
                    "stdout_path": request.stdout_path(i),
                    "stderr_path": request.stderr_path(i),
                    "checkpoint": checkpoint,
                }
                for i, t in enumerate(tasks)
            ]
        )
    try:
        base = submit_when_room(
            ctx,
            driver,
            request,
            [row.id for row in rows],
            renewal=renewal_wait(ctx, name),
            wait=wait_for_room,
        )
    except SiteError as exc:
        return [
            ctx.store.update_job(
                row.id, state=JobState.FAILED, reason=f"not submitted: {exc}", ended=now()
            )
            for row in rows
        ]
    ids = [f"{base}_{i}" if request.is_array else base for i in range(len(rows))]
    records = [
        ctx.store.update_job(
            row.id, scheduler_id=scheduler_id, state=JobState.PENDING, submitted=now()
        )
        for row, scheduler_id in zip(rows, ids, strict=True)
    ]
    ctx.note_submitted(name, attempt, site, ids)
    return records


def respect_queue_limit(ctx: RunContext, driver: SiteDriver, new_jobs: int) -> None:
    """Wait while this site's live hpcfleet jobs plus `new_jobs` exceed its
    `policy.max_queued_jobs` (a job larger than the limit goes alone)."""
    limit = driver.site.policy.max_queued_jobs
    waited = False
    while not ctx.cancel_requested():
        live = ctx.store.live_job_count(driver.name)
        if live == 0 or live + new_jobs <= limit:
            return
        if not waited:
            log.info(
                "%s: %d live jobs + %d new > max_queued_jobs %d; waiting",
                driver.name,
                live,
                new_jobs,
                limit,
            )
            waited = True
        time.sleep(driver.site.poll_interval)


def submit_when_room(
    ctx: RunContext,
    driver: SiteDriver,
    request: JobRequest,
    job_ids: Sequence[int],
    *,
    renewal: RenewalWait | None = None,
    wait: bool = True,
) -> str:
    """Submit; while the site refuses only because the user's QOS or association job
    submit limit is reached, the jobs wait (their reason says so, for `run watch`) and
    are submitted again each poll interval until the queue has room (without `wait`,
    the refusal is raised). Expired credentials are waited out through `renewal` (the
    login failed: nothing was sent)."""
    noted = False
    while True:
        try:
            return with_retries(
                partial(submit_once, driver, request),
                f"submitting {request.name} to {driver.name}",
                max_wait=0,
                renewal=renewal,
            )
        except SubmitLimitReached as exc:
            if ctx.cancel_requested() or not wait:
                raise
            if not _others_queued(driver):
                # Nothing of ours is queued to leave: the job alone is over the limit.
                raise SchedulerError(
                    driver.name,
                    f"{request.name} ({len(request.tasks)} task(s)) is refused by the job "
                    f"submit limit ({exc.limit}) with no other job of this user queued: it "
                    "alone is more than the limit allows; split the array, or ask the site "
                    "for a QOS that allows it",
                ) from exc
            if not noted:
                note = (
                    f"waiting: the job submit limit on {driver.name} is reached "
                    f"({exc.limit}); submitting when the queue has room"
                )
                log.info("%s: %s", request.name, note)
                for job_id in job_ids:
                    ctx.store.update_job(job_id, reason=note)
                noted = True
        time.sleep(driver.site.poll_interval)


def _others_queued(driver: SiteDriver) -> bool:
    """Whether the login user has jobs in the site's queue (unknown counts as yes: then
    waiting is the safe choice)."""
    result = driver.transport.run(remote.queue_depth_command())
    depth = remote.parse_queue_depth(result.returncode, result.stdout, result.stderr)
    return depth is None or depth > 0


def submit_once(driver: SiteDriver, request: JobRequest) -> str:
    """Submit the request once. A site that refuses it because of its node exclusions
    (e.g. every node of the partition excluded) gets it again without them."""
    if request.exclude_nodes:
        try:
            return _submit_with_retries(driver, request)
        except SiteError as exc:
            if exc.transient or isinstance(exc, SubmitLimitReached):
                raise
            log.warning(
                "%s refused %s with nodes %s excluded (%s); submitting without exclusions",
                driver.name,
                request.name,
                ",".join(request.exclude_nodes),
                exc,
            )
            request = replace(request, exclude_nodes=())
    return _submit_with_retries(driver, request)


def _submit_with_retries(driver: SiteDriver, request: JobRequest) -> str:
    """Submit, retrying transient failures; never twice: a submit whose answer was lost
    may still have queued the job, so look for it by name before trying again."""
    delay = 2.0
    for attempt in range(1, SUBMIT_TRIES + 1):
        try:
            return driver.scheduler.submit(request)
        except SiteError as exc:
            # A first login refused for expired credentials sent nothing: the caller waits.
            first_login = attempt == 1 and isinstance(exc, CredentialsExpired)
            if not exc.transient or attempt == SUBMIT_TRIES or first_login:
                raise
            log.warning("submitting to %s failed (%s); retrying in %.0f s", driver.name, exc, delay)
        time.sleep(delay)
        delay *= 2
        try:
            found = driver.scheduler.find_by_name(request.name)
        except SiteError:
            continue
        if found:  # the newest: a refused submission can leave a FAILED record by the name
            return max((s.job_id.split("_")[0] for s in found), key=job_id_order)
    raise AssertionError("unreachable")


def reattach(ctx: RunContext, name: str, attempt: int, live: list[JobRecord]) -> list[JobRecord]:
    """The live jobs of an attempt, after a restart: those recorded SUBMITTING (id
    unknown) are adopted by finding them by name, or submitted if they never were."""
    records: list[JobRecord] = []
    by_site: dict[str, list[JobRecord]] = defaultdict(list)
    for job in live:
        by_site[job.site].append(job)
    for site, jobs in by_site.items():
        records.extend(j for j in jobs if j.scheduler_id is not None)
        unknown = [j for j in jobs if j.scheduler_id is None]
        if unknown:
            records.extend(_adopt(ctx, name, attempt, site, unknown))
    return records


def _adopt(
    ctx: RunContext, name: str, attempt: int, site: str, unknown: list[JobRecord]
) -> list[JobRecord]:
    """Give the SUBMITTING jobs of one site the ids the scheduler knows them by."""
    found = ctx.driver(site).scheduler.find_by_name(job_name(ctx.run_id, name, attempt))
    ids = sorted({s.job_id.split("_")[0] for s in found}, key=job_id_order)
    if not ids:
        log.info("stage %s: attempt %d on %s was never submitted; submitting", name, attempt, site)
        tasks = [PlannedTask.of_job(j) for j in unknown]
        for j in unknown:
            ctx.store.update_job(j.id, state=JobState.CANCELLED, reason="never submitted")
        return submit_tasks(ctx, name, attempt, tasks)
    base = ids[-1]
    is_array = any(s.array_index is not None for s in found)
    all_rows = [j for j in ctx.store.jobs(ctx.run_id, name, attempt) if j.site == site]
    records = []
    for position, row in enumerate(all_rows):
        if row.scheduler_id is None:
            scheduler_id = f"{base}_{position}" if is_array else base
            records.append(
                ctx.store.update_job(row.id, scheduler_id=scheduler_id, state=JobState.PENDING)
            )
    return records
