"""Driving one stage of a run to a final state: submit, watch, collect, retry.

The store is the source of truth: every submission is recorded before it happens
(state SUBMITTING) and after (with the scheduler's id), so that a restarted
orchestrator reattaches to live jobs, or finds a job it submitted just before dying
by its deterministic name, instead of submitting it twice.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial

from flows import staging
from flows.collect import collect_attempt, record_outputs
from flows.context import RunContext, StageProgress
from flows.jobs import build_request, job_name
from flows.retry import with_retries
from flows.watcher import SiteWatcher
from registry.records import JobRecord
from registry.states import JobState, RunState
from registry.store import now
from sites.driver import SiteDriver
from sites.errors import SiteError
from sites.scheduler import JobRequest, JobStatus

log = logging.getLogger(__name__)

# A job the scheduler has never reported, or stopped reporting, for this long is lost.
LOST_AFTER_SECONDS = 600.0
SUBMIT_TRIES = 3


@dataclass(frozen=True)
class Task:
    """One unit of work of a stage: the stage itself, or one value of its array."""

    site: str
    index: int | None  # array index in the spec
    value: str | None  # array value


def run_stage(ctx: RunContext, name: str) -> RunState:
    """Drive stage `name` to a final state and return it. Never raises for job failures.

    A chained stage (see `chainable_stages`) starts as soon as its needs have submitted
    their jobs, and is submitted with `afterok` on them.
    """
    try:
        return _run_stage(ctx, name)
    finally:
        ctx.note_final(name)


def _run_stage(ctx: RunContext, name: str) -> RunState:
    records = {s.name: s for s in ctx.store.stages(ctx.run_id)}
    record = records[name]
    if record.state.is_final:
        return record.state
    stage = ctx.spec.stage(name)
    chain = None
    if name in ctx.chained:
        # Waiting for the needs' submissions changes their states: read them again after.
        chain = ctx.wait_for_needs(stage.needs, final=False)
        records = {s.name: s for s in ctx.store.stages(ctx.run_id)}
    states = {n: r.state for n, r in records.items()}
    for needed in stage.needs:
        state = states[needed]
        if state is not RunState.COMPLETED and (chain is None or state.is_final):
            return _finish(
                ctx, name, RunState.CANCELLED, f"skipped: needs {needed}, which {state.lower()}"
            )
    if ctx.cancel_requested():
        # Resumed after a cancel request: jobs may still be live on the sites.
        _cancel_live(ctx, [j for j in ctx.store.jobs(ctx.run_id, name) if not j.state.is_final])
        return _finish(ctx, name, RunState.CANCELLED, "the run was cancelled")
    try:
        return _drive(ctx, name, record.attempt, chain)
    except SiteError as exc:
        log.error("stage %s of run %s failed: %s", name, ctx.run_id, exc)
        return _finish(ctx, name, RunState.FAILED, str(exc))


def _drive(
    ctx: RunContext, name: str, last_attempt: int, chain: dict[str, StageProgress] | None
) -> RunState:
    plan = ctx.plans[name]
    ctx.store.update_stage(
        ctx.run_id,
        name,
        state=RunState.RUNNING,
        sites=list(plan.sites),
        choice=plan.explanation,
        started=now(),
    )
    history = ctx.store.jobs(ctx.run_id, name)
    live = [j for j in history if j.attempt == last_attempt and not j.state.is_final]
    if live:
        attempt = last_attempt
        jobs = _reattach(ctx, name, attempt, live) + [
            j for j in history if j.attempt == attempt and j.state.is_final
        ]
        for site in {j.site for j in jobs}:
            ctx.note_submitted(
                name,
                attempt,
                site,
                [j.scheduler_id for j in jobs if j.site == site and j.scheduler_id],
            )
    else:
        with_retries(lambda: _prepare_inputs(ctx, name), f"staging inputs of {name}")
        attempt = last_attempt + 1
        tasks = _initial_tasks(ctx, name) if last_attempt == 0 else _next_tasks(ctx, name, history)
        if not tasks:
            return _conclude(ctx, name, history)
        jobs = _submit(
            ctx, name, attempt, tasks, after_ok=_chain_ids(chain), avoid=_failed_nodes(history)
        )
    while True:
        jobs = _wait(ctx, name, jobs)
        collect_attempt(ctx, name, attempt, jobs)
        if ctx.cancel_requested():
            return _finish(ctx, name, RunState.CANCELLED, "cancelled")
        if chain is not None:
            ended = ctx.wait_for_needs(list(chain), final=True)
            chain_ran_on = chain
            chain = None
            states = {s.name: s.state for s in ctx.store.stages(ctx.run_id)}
            failed = [need for need in ended if states[need] is not RunState.COMPLETED]
            if failed:
                return _finish(
                    ctx,
                    name,
                    RunState.CANCELLED,
                    f"skipped: needs {failed[0]}, which {states[failed[0]].lower()}",
                )
            retried = any(ended[n].attempt != chain_ran_on[n].attempt for n in ended)
            redo = [
                Task(j.site, j.array_index, j.array_value)
                for j in jobs
                if j.state is JobState.CANCELLED
            ]
            if retried and redo:
                # Our jobs waited on an attempt that failed; its retry succeeded.
                attempt += 1
                jobs = _submit(ctx, name, attempt, redo)
                continue
        if any(j.state is JobState.CANCELLED for j in jobs):
            return _finish(ctx, name, RunState.CANCELLED, "cancelled")
        history = ctx.store.jobs(ctx.run_id, name)
        tasks = _next_tasks(ctx, name, history)
        if not tasks:
            return _conclude(ctx, name, history)
        attempt += 1
        log.info("stage %s: attempt %d for %d task(s)", name, attempt, len(tasks))
        jobs = _submit(ctx, name, attempt, tasks, avoid=_failed_nodes(history))


def _initial_tasks(ctx: RunContext, name: str) -> list[Task]:
    plan = ctx.plans[name]
    if not plan.shares:
        return [Task(plan.sites[0], None, None)]
    return [Task(site, i, v) for site, share in plan.shares.items() for i, v in share]


def _latest_by_task(history: list[JobRecord]) -> dict[tuple[str, int | None], list[JobRecord]]:
    by_task: dict[tuple[str, int | None], list[JobRecord]] = defaultdict(list)
    for job in history:
        by_task[(job.site, job.array_index)].append(job)
    return by_task


def _next_tasks(ctx: RunContext, name: str, history: list[JobRecord]) -> list[Task]:
    """Tasks whose last attempt failed in a way the stage's policy says to try again."""
    stage = ctx.spec.stage(name)
    tasks = []
    for (site, index), jobs in _latest_by_task(history).items():
        last = jobs[-1]
        failures = sum(j.state.is_retryable_failure for j in jobs)
        interruptions = sum(j.state.is_resumable_interruption for j in jobs)
        if (last.state.is_retryable_failure and failures <= stage.retries) or (
            last.state.is_resumable_interruption
            and stage.resumable
            and interruptions <= stage.max_resumes
        ):
            tasks.append(Task(site, index, last.array_value))
    return sorted(tasks, key=lambda t: (t.site, t.index or 0))


def _failed_nodes(history: list[JobRecord]) -> dict[str, set[str]]:
    """Per site, the nodes on which a task of this stage failed or whose node failed."""
    nodes: dict[str, set[str]] = defaultdict(set)
    for job in history:
        if job.state.is_retryable_failure and job.node and job.node != "localhost":
            nodes[job.site].add(job.node)
    return nodes


def _conclude(ctx: RunContext, name: str, history: list[JobRecord]) -> RunState:
    """All tasks are final and none will be tried again: the stage's verdict."""
    stage = ctx.spec.stage(name)
    last_jobs = [jobs[-1] for jobs in _latest_by_task(history).values()]
    failed = [j for j in last_jobs if j.state is not JobState.COMPLETED]
    if failed:
        attempts = len({j.attempt for j in history})
        return _finish(
            ctx, name, RunState.FAILED, _failure_reason(failed[0], attempts, stage.retries)
        )
    for site in ctx.plans[name].sites:
        missing = with_retries(
            partial(
                staging.missing_outputs, ctx.driver(site), ctx.layout(site, name), stage.outputs
            ),
            f"checking the outputs of {name} on {site}",
        )
        if missing:
            return _finish(
                ctx,
                name,
                RunState.FAILED,
                f"declared outputs missing on {site}: {', '.join(missing)}",
            )
    if stage.outputs:
        with_retries(lambda: record_outputs(ctx, name), f"recording the outputs of {name}")
    return _finish(ctx, name, RunState.COMPLETED, None)


def _failure_reason(job: JobRecord, attempts: int, retries: int) -> str:
    what = f"{job.stage}[{job.array_value}]" if job.array_value is not None else job.stage
    if job.state is JobState.OUT_OF_MEMORY:
        text = f"{what} on {job.site} ran out of memory; raise resources.mem"
    elif job.state is JobState.TIMEOUT:
        text = f"{what} on {job.site} hit its time limit; raise resources.time or set resumable"
    elif job.exit_code is not None:
        text = f"{what} on {job.site} {job.state.lower()} with exit code {job.exit_code}"
    else:
        text = f"{what} on {job.site} ended {job.state.lower()}"
    if attempts > 1:
        text += f" after {attempts} attempts"
    if job.reason:
        text += f": {job.reason}"
    return text


def _finish(ctx: RunContext, name: str, state: RunState, reason: str | None) -> RunState:
    ctx.store.update_stage(ctx.run_id, name, state=state, reason=reason, ended=now())
    log.info("stage %s: %s%s", name, state, f" ({reason})" if reason else "")
    return state


def _prepare_inputs(ctx: RunContext, name: str) -> None:
    """Work dir, the spec's files and the outputs of needed stages, on every chosen site."""
    stage = ctx.spec.stage(name)
    for site in ctx.plans[name].sites:
        driver, layout = ctx.driver(site), ctx.layout(site, name)
        staging.prepare_dirs(driver, layout, 1)
        staging.upload_files(driver, layout, ctx.files)
        for needed in stage.needs:
            for source_site in ctx.plans[needed].sites:
                how = staging.stage_input(
                    ctx.driver(source_site), ctx.layout(source_site, needed), driver, layout
                )
                log.info("stage %s on %s: input %s %s", name, site, needed, how)


def _chain_ids(chain: dict[str, StageProgress] | None) -> tuple[str, ...]:
    """Scheduler ids to wait for with afterok: the live jobs of the needed stages."""
    if not chain:
        return ()
    ids = {
        job_id.split("_")[0]
        for progress in chain.values()
        if not progress.final
        for site_ids in progress.job_ids.values()
        for job_id in site_ids
    }
    return tuple(sorted(ids, key=lambda i: (len(i), i)))


def _submit(
    ctx: RunContext,
    name: str,
    attempt: int,
    tasks: list[Task],
    after_ok: tuple[str, ...] = (),
    avoid: dict[str, set[str]] | None = None,
) -> list[JobRecord]:
    """Submit one job (array) per site; each recorded before and after the submit call.

    `avoid` names, per site, nodes to exclude (where earlier attempts failed).
    """
    stage = ctx.spec.stage(name)
    plan = ctx.plans[name]
    ctx.store.update_stage(ctx.run_id, name, attempt=attempt)
    by_site: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_site[task.site].append(task)
    records: list[JobRecord] = []
    for site, site_tasks in by_site.items():
        driver, layout = ctx.driver(site), ctx.layout(site, name)
        with_retries(
            partial(staging.prepare_dirs, driver, layout, attempt), f"preparing {name} on {site}"
        )
        share = [
            (t.index, t.value) for t in site_tasks if t.index is not None and t.value is not None
        ]
        request = build_request(
            ctx.spec,
            stage,
            driver.site,
            run_id=ctx.run_id,
            attempt=attempt,
            layout=layout,
            partition=plan.partitions.get(site),
            share=share,
            after_ok=after_ok,
            exclude_nodes=sorted((avoid or {}).get(site, ())),
        )
        with ctx.submit_lock(site):
            _respect_queue_limit(ctx, driver, len(site_tasks))
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
                    }
                    for i, t in enumerate(site_tasks)
                ]
            )
        try:
            base = _submit_once(driver, request)
        except SiteError as exc:
            for row in rows:
                records.append(
                    ctx.store.update_job(
                        row.id, state=JobState.FAILED, reason=f"not submitted: {exc}", ended=now()
                    )
                )
            continue
        ids = [f"{base}_{i}" if request.is_array else base for i in range(len(rows))]
        for row, scheduler_id in zip(rows, ids, strict=True):
            records.append(
                ctx.store.update_job(
                    row.id, scheduler_id=scheduler_id, state=JobState.PENDING, submitted=now()
                )
            )
        ctx.note_submitted(name, attempt, site, ids)
    return records


def _respect_queue_limit(ctx: RunContext, driver: SiteDriver, new_jobs: int) -> None:
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


def _submit_once(driver: SiteDriver, request: JobRequest) -> str:
    """Submit the request once. A site that refuses it because of its node exclusions
    (e.g. every node of the partition excluded) gets it again without them."""
    if request.exclude_nodes:
        try:
            return _submit_with_retries(driver, request)
        except SiteError as exc:
            if exc.transient:
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
            if not exc.transient or attempt == SUBMIT_TRIES:
                raise
            log.warning("submitting to %s failed (%s); retrying in %.0f s", driver.name, exc, delay)
        time.sleep(delay)
        delay *= 2
        try:
            found = driver.scheduler.find_by_name(request.name)
        except SiteError:
            continue
        if found:  # the newest: a refused submission can leave a FAILED record by the name
            return max((s.job_id.split("_")[0] for s in found), key=int)
    raise AssertionError("unreachable")


def _reattach(ctx: RunContext, name: str, attempt: int, live: list[JobRecord]) -> list[JobRecord]:
    """Adopt jobs recorded as SUBMITTING (id unknown) by finding them by name."""
    records: list[JobRecord] = []
    by_site: dict[str, list[JobRecord]] = defaultdict(list)
    for job in live:
        by_site[job.site].append(job)
    for site, jobs in by_site.items():
        unknown = [j for j in jobs if j.scheduler_id is None]
        records.extend(j for j in jobs if j.scheduler_id is not None)
        if not unknown:
            continue
        found = ctx.driver(site).scheduler.find_by_name(job_name(ctx.run_id, name, attempt))
        all_rows = [j for j in ctx.store.jobs(ctx.run_id, name, attempt) if j.site == site]
        ids = sorted({s.job_id.split("_")[0] for s in found}, key=int)
        if not ids:
            log.info(
                "stage %s: attempt %d on %s was never submitted; submitting", name, attempt, site
            )
            tasks = [Task(site, j.array_index, j.array_value) for j in unknown]
            for j in unknown:
                ctx.store.update_job(j.id, state=JobState.CANCELLED, reason="never submitted")
            records.extend(_submit(ctx, name, attempt, tasks))
            continue
        base = ids[-1]
        is_array = any(s.array_index is not None for s in found)
        for position, row in enumerate(all_rows):
            if row.scheduler_id is None:
                scheduler_id = f"{base}_{position}" if is_array else base
                records.append(
                    ctx.store.update_job(row.id, scheduler_id=scheduler_id, state=JobState.PENDING)
                )
    return records


def _wait(ctx: RunContext, name: str, jobs: list[JobRecord]) -> list[JobRecord]:
    """Follow the jobs until all are final, writing every change to the store."""
    current = {j.id: j for j in jobs}
    live = {j.id: j for j in jobs if not j.state.is_final and j.scheduler_id}
    watchers: dict[str, SiteWatcher] = {}
    for job in live.values():
        watcher = watchers.setdefault(job.site, ctx.watchers.get(ctx.driver(job.site)))
        watcher.track([job.scheduler_id or ""])
    first_seen_deadline = {j.id: time.monotonic() + LOST_AFTER_SECONDS for j in live.values()}
    cancelling = False
    try:
        while live:
            for site, watcher in watchers.items():
                ids = {j.scheduler_id for j in live.values() if j.site == site}
                if ids:
                    watcher.wait(
                        partial(_changed, ids=ids, live=live), timeout=max(1.0, watcher.interval)
                    )
            if not cancelling and ctx.cancel_requested():
                cancelling = True
                _cancel_live(ctx, list(live.values()))
            updates = []
            for job_id, job in list(live.items()):
                status = watchers[job.site].snapshot().get(job.scheduler_id or "")
                if status is None:
                    if time.monotonic() > first_seen_deadline[job_id]:
                        status = JobStatus(
                            job.scheduler_id or "",
                            JobState.NODE_FAIL,
                            reason="the scheduler no longer knows this job",
                        )
                    else:
                        continue
                fields = _fields(job, status)
                if fields:
                    updates.append((job_id, fields))
                    current[job_id] = job.model_copy(update=fields)
                    live[job_id] = current[job_id]
                if status.state.is_final:
                    del live[job_id]
            if updates:
                ctx.store.update_jobs(updates)
    finally:
        for job in jobs:
            if job.scheduler_id and job.site in watchers:
                watchers[job.site].untrack([job.scheduler_id])
    return list(current.values())


def _changed(
    latest: dict[str, JobStatus], ids: set[str | None], live: dict[int, JobRecord]
) -> bool:
    for job in live.values():
        status = latest.get(job.scheduler_id or "")
        if (
            job.scheduler_id in ids
            and status is not None
            and status.state not in (job.state, JobState.UNKNOWN)
        ):
            return True
    return False


def _fields(job: JobRecord, status: JobStatus) -> dict[str, object]:
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


def _cancel_live(ctx: RunContext, jobs: list[JobRecord]) -> None:
    by_site: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        if job.scheduler_id:
            by_site[job.site].append(job.scheduler_id)
    for site, ids in by_site.items():
        try:
            ctx.driver(site).scheduler.cancel(ids)
        except SiteError as exc:
            log.warning("cancelling jobs on %s failed: %s", site, exc)
