"""Driving a chained stage's segments (`flows.segments`): queue them, follow them one
after the other, drop the rest, keep them off a failed node, and reattach after a
restart.

Step of a run's life: the stage runner (`flows.stage_runner`) calls `submit_chain`
instead of `submit_tasks`, and `follow_chain` instead of following an attempt, for a
stage with `chain: N`. Each segment is submitted through the submission protocol
(`flows.submission`: recorded before and after its submit call), so a restarted
orchestrator finds every segment it queued and never queues one twice. A segment is
dropped in three steps, each safe to repeat after a crash: its record gets the
dropped reason (still live), it is cancelled on the site, then recorded CANCELLED.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flows.collect import collect_attempt
from flows.context import RunContext
from flows.following import cancel_live, follow
from flows.jobs import job_name
from flows.retry import failed_nodes
from flows.segments import SegmentPlace, dropped_reason, follow_up_count, goes_on, is_dropped
from flows.submission import submit_tasks
from flows.tasks import PlannedTask
from registry.records import JobRecord
from registry.states import JobState
from registry.store import now
from sites.errors import SiteError

log = logging.getLogger(__name__)


def submit_chain(
    ctx: RunContext,
    name: str,
    attempt: int,
    tasks: Sequence[PlannedTask],
    after_ok: tuple[str, ...] = (),
    avoid: dict[str, set[str]] | None = None,
) -> list[JobRecord]:
    """Submit the segment `attempt` and queue the follow-ups behind it, each with
    afternotok on all segments before it; return every segment queued, oldest first."""
    history = ctx.store.jobs(ctx.run_id, name)
    count = follow_up_count(ctx.spec.stage(name), history)
    first = SegmentPlace()
    previous = submit_tasks(ctx, name, attempt, tasks, after_ok, avoid, segment=first)
    segments = list(previous)
    for number in range(1, count + 1):
        if any(j.state.is_final or not j.scheduler_id for j in previous):
            break  # refused, or already over: nothing to queue behind
        place = SegmentPlace(
            tuple(s.attempt for s in segments), tuple(s.scheduler_id or "" for s in segments)
        )
        queued = submit_tasks(ctx, name, attempt + number, tasks, after_ok, avoid, segment=place)
        refused = [j for j in queued if j.state.is_final]
        if refused:
            # The chain is shorter; the retry policy resumes the stage when it runs out.
            for job in refused:
                ctx.store.update_job(job.id, reason=dropped_reason(job.reason or "not queued"))
            break
        segments.extend(queued)
        previous = queued
    log.info("stage %s: segment %d queued with %d follow-up(s)", name, attempt, len(segments) - 1)
    return segments


def follow_chain(ctx: RunContext, name: str, segments: list[JobRecord]) -> list[JobRecord]:
    """Follow the segments one after the other until one ends the chain (or none is
    left); drop those still queued then. Returns the last segment that ran, as a list
    (the attempt the stage runner judges)."""
    segments = sorted((s for s in segments if not is_dropped(s)), key=lambda s: s.attempt)
    if not segments:
        return []
    index = 0
    while True:
        segment = segments[index]
        rest = segments[index + 1 :]
        if not segment.state.is_final:
            try:
                segment = follow(ctx, [segment])[0]
                collect_attempt(ctx, name, segment.attempt, [segment])
            except SiteError:
                # The stage fails: nobody would follow the segments still queued.
                drop_segments(ctx, rest, f"segment {segment.attempt} was lost with its site")
                raise
            segments[index] = segment
        if not rest or not goes_on(segment) or ctx.cancel_requested():
            drop_segments(ctx, rest, f"segment {segment.attempt} ended {segment.state.lower()}")
            return [segment]
        if segment.state is JobState.NODE_FAIL:
            _keep_off_failed_nodes(ctx, name, rest)
        log.info(
            "stage %s: segment %d ended %s; segment %d takes over",
            name,
            segment.attempt,
            segment.state,
            rest[0].attempt,
        )
        index += 1


def drop_segments(ctx: RunContext, segments: Sequence[JobRecord], why: str) -> None:
    """Record the segments after the one that ended the chain dropped, and cancel those
    still live. SLURM has usually cancelled them already (their afternotok can no
    longer hold after a COMPLETED segment); after a FAILED one, the next may have
    started."""
    for segment in segments:
        if not is_dropped(segment):
            ctx.store.update_job(segment.id, reason=dropped_reason(why))
    live = [s for s in segments if not s.state.is_final]
    cancel_live(ctx, live)
    for segment in live:
        ctx.store.update_job(segment.id, state=JobState.CANCELLED, ended=now())
    if live:
        log.info("dropped %d queued segment(s): %s", len(live), why)


def _keep_off_failed_nodes(ctx: RunContext, name: str, queued: Sequence[JobRecord]) -> None:
    """After a segment's node failed: exclude every node a segment failed on from the
    segments still queued (a segment that already started keeps its node)."""
    nodes = failed_nodes(ctx.store.jobs(ctx.run_id, name))
    for site, site_nodes in nodes.items():
        ids = [s.scheduler_id for s in queued if s.site == site and s.scheduler_id]
        if not ids:
            continue
        try:
            ctx.driver(site).scheduler.exclude_nodes(ids, sorted(site_nodes))
            log.info("stage %s: queued segments now avoid %s", name, ", ".join(sorted(site_nodes)))
        except SiteError as exc:
            log.warning("stage %s: cannot exclude %s on %s: %s", name, site_nodes, site, exc)


def reattach_chain(ctx: RunContext, name: str, history: list[JobRecord]) -> list[JobRecord]:
    """The segments a former orchestrator queued, for `follow_chain`.

    Those recorded SUBMITTING are adopted by name (one never submitted is dropped, not
    submitted now: it would lose its place behind the one before); those it was
    dropping are dropped. The segment just before the live ones comes first when it
    ended the chain (the orchestrator stopped before dropping the rest): a COMPLETED
    one always did; any other, when all live segments were being dropped. A FAILED
    one before a new chain is the attempt that chain retries, and stays out.
    """
    live = sorted((j for j in history if not j.state.is_final), key=lambda j: j.attempt)
    first = live[0].attempt
    segments: list[JobRecord] = []
    for job in live:
        adopted = job if job.scheduler_id else _adopt_segment(ctx, name, job)
        if adopted is not None:
            segments.append(adopted)
    for job in segments:
        if job.scheduler_id:
            ctx.note_submitted(name, job.attempt, job.site, [job.scheduler_id])
    marked = [s for s in segments if is_dropped(s)]
    drop_segments(ctx, marked, "")  # their reason was recorded before the restart
    kept = [s for s in segments if not is_dropped(s)]
    before = [
        j for j in history if j.attempt == first - 1 and j.state.is_final and not is_dropped(j)
    ]
    if before and (not kept or before[0].state is JobState.COMPLETED):
        return before + kept
    return kept


def _adopt_segment(ctx: RunContext, name: str, job: JobRecord) -> JobRecord | None:
    """A segment recorded SUBMITTING: its id if the site knows its name, else dropped."""
    found = ctx.driver(job.site).scheduler.find_by_name(job_name(ctx.run_id, name, job.attempt))
    ids = sorted({s.job_id.split("_")[0] for s in found}, key=int)
    if ids:
        return ctx.store.update_job(job.id, scheduler_id=ids[-1], state=JobState.PENDING)
    ctx.store.update_job(
        job.id,
        state=JobState.CANCELLED,
        reason=dropped_reason("never submitted before the orchestrator restarted"),
        ended=now(),
    )
    return None
