"""The stage state machine: drive one stage of a run to a final state.

Step of a run's life: the engine (`flows.engine`, or the Prefect flow in
`flows.cross_site`) calls `run_stage` once per stage, when the stage's needs have
ended (or, for a chained stage, submitted). A stage then goes:

    skip?        a need did not complete, or the run was cancelled -> CANCELLED
    prepare      work dirs, the spec's files, the needs' outputs on every chosen site
    drive        submit an attempt (`flows.submission`), follow it to its end
                 (`flows.following`), collect logs and metrics (`flows.collect`), and
                 submit the next attempt while the retry policy (`flows.retry`) says so;
                 a stage with `chain: N` queues and follows segments instead
                 (`flows.segment_runner`), judged by the segment that ended the chain
    conclude     COMPLETED if every task's last job completed and the declared outputs
                 exist, FAILED with the reason otherwise

A restarted orchestrator enters `drive` with the live jobs of the last attempt and
reattaches to them instead of submitting again.
"""

from __future__ import annotations

import logging
from functools import partial

from flows import staging
from flows.chains import afterok_ids
from flows.checkpoints import watching_checkpoints
from flows.collect import collect_attempt, record_outputs
from flows.context import RunContext, StageProgress
from flows.credentials import renewal_wait
from flows.following import cancel_live, follow
from flows.for_each import run_for_each
from flows.residency import guard_handoff
from flows.retry import cancelled_tasks, failed_nodes, failure_reason, next_tasks, with_retries
from flows.segment_runner import follow_chain, reattach_chain, submit_chain
from flows.segments import verdict_history
from flows.submission import reattach, submit_tasks
from flows.tasks import PlannedTask, initial_tasks
from registry.records import JobRecord
from registry.states import JobState, RunState
from registry.store import now
from sites.errors import CredentialsExpired, SiteError

log = logging.getLogger(__name__)


def run_stage(ctx: RunContext, name: str) -> RunState:
    """Drive stage `name` to a final state and return it. Never raises for job failures.

    A chained stage (see `flows.chains`) starts as soon as its needs have submitted
    their jobs, and is submitted with `afterok` on them. A `for_each: checkpoint` stage
    runs once per checkpoint (`flows.for_each`); the checkpoints of a stage that
    declares them are watched while it runs (`flows.checkpoints`).
    """
    try:
        with watching_checkpoints(ctx, name):
            if ctx.spec.stage(name).for_each is not None:
                return run_for_each(ctx, name)
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
            return _finish(ctx, name, RunState.CANCELLED, _skip_reason(needed, state))
    if ctx.cancel_requested():
        # Resumed after a cancel request: jobs may still be live on the sites.
        cancel_live(ctx, [j for j in ctx.store.jobs(ctx.run_id, name) if not j.state.is_final])
        return _finish(ctx, name, RunState.CANCELLED, "the run was cancelled")
    try:
        return _drive(ctx, name, record.attempt, chain)
    except SiteError as exc:
        if isinstance(exc, CredentialsExpired) and ctx.cancel_requested():
            return _finish(ctx, name, RunState.CANCELLED, "cancelled")  # while waiting
        log.error("stage %s of run %s failed: %s", name, ctx.run_id, exc)
        return _finish(ctx, name, RunState.FAILED, str(exc))


def _skip_reason(need: str, state: RunState) -> str:
    return f"skipped: needs {need}, which {state.lower()}"


def _drive(
    ctx: RunContext, name: str, last_attempt: int, chain: dict[str, StageProgress] | None
) -> RunState:
    """Start (or reattach to) an attempt, then follow attempts until the verdict."""
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
    if ctx.spec.stage(name).chain and any(not j.state.is_final for j in history):
        return _follow_attempts(ctx, name, last_attempt, reattach_chain(ctx, name, history), chain)
    if any(j.attempt == last_attempt and not j.state.is_final for j in history):
        return _follow_attempts(
            ctx, name, last_attempt, _reattach_attempt(ctx, name, last_attempt, history), chain
        )
    with_retries(
        lambda: _prepare_inputs(ctx, name),
        f"staging inputs of {name}",
        renewal=renewal_wait(ctx, name),
    )
    stage = ctx.spec.stage(name)
    tasks = (
        initial_tasks(plan) if last_attempt == 0 else next_tasks(stage, verdict_history(history))
    )
    if not tasks:
        return _conclude(ctx, name, history)
    attempt = last_attempt + 1
    jobs = _submit(ctx, name, attempt, tasks, afterok_ids(chain), failed_nodes(history))
    return _follow_attempts(ctx, name, attempt, jobs, chain)


def _submit(
    ctx: RunContext,
    name: str,
    attempt: int,
    tasks: list[PlannedTask],
    after_ok: tuple[str, ...] = (),
    avoid: dict[str, set[str]] | None = None,
) -> list[JobRecord]:
    """Submit an attempt: one job per site, or a chain of segments (`chain: N`)."""
    if ctx.spec.stage(name).chain:
        return submit_chain(ctx, name, attempt, tasks, after_ok, avoid)
    return submit_tasks(ctx, name, attempt, tasks, after_ok=after_ok, avoid=avoid)


def _reattach_attempt(
    ctx: RunContext, name: str, attempt: int, history: list[JobRecord]
) -> list[JobRecord]:
    """The jobs of an attempt a former orchestrator submitted, live ones reattached."""
    live = [j for j in history if j.attempt == attempt and not j.state.is_final]
    jobs = reattach(ctx, name, attempt, live) + [
        j for j in history if j.attempt == attempt and j.state.is_final
    ]
    for site in {j.site for j in jobs}:
        ids = [j.scheduler_id for j in jobs if j.site == site and j.scheduler_id]
        ctx.note_submitted(name, attempt, site, ids)
    return jobs


def _follow_attempts(
    ctx: RunContext,
    name: str,
    attempt: int,
    jobs: list[JobRecord],
    chain: dict[str, StageProgress] | None,
) -> RunState:
    """Follow each attempt to its end and submit the next, until the stage has a verdict."""
    while True:
        if ctx.spec.stage(name).chain:
            jobs = follow_chain(ctx, name, jobs)
            attempt = max(j.attempt for j in ctx.store.jobs(ctx.run_id, name))
        else:
            jobs = follow(ctx, jobs)
            collect_attempt(ctx, name, attempt, jobs)
        if ctx.cancel_requested():
            return _finish(ctx, name, RunState.CANCELLED, "cancelled")
        if chain is not None:
            skipped, redo = _after_chain(ctx, chain, jobs)
            chain = None
            if skipped is not None:
                return _finish(ctx, name, RunState.CANCELLED, skipped)
            if redo:
                attempt += 1
                jobs = _submit(ctx, name, attempt, redo)
                continue
        if any(j.state is JobState.CANCELLED for j in jobs):
            return _finish(ctx, name, RunState.CANCELLED, "cancelled")
        history = ctx.store.jobs(ctx.run_id, name)
        tasks = next_tasks(ctx.spec.stage(name), verdict_history(history))
        if not tasks:
            return _conclude(ctx, name, history)
        attempt += 1
        log.info("stage %s: attempt %d for %d task(s)", name, attempt, len(tasks))
        jobs = _submit(ctx, name, attempt, tasks, avoid=failed_nodes(history))


def _after_chain(
    ctx: RunContext, chain: dict[str, StageProgress], jobs: list[JobRecord]
) -> tuple[str | None, list[PlannedTask]]:
    """Once the needs a chained attempt was queued behind have ended: why the stage is
    skipped (a need did not complete), or the tasks to run again (they waited on an
    attempt of a need that failed, and the need's retry succeeded)."""
    ended = ctx.wait_for_needs(list(chain), final=True)
    states = {s.name: s.state for s in ctx.store.stages(ctx.run_id)}
    failed = [need for need in ended if states[need] is not RunState.COMPLETED]
    if failed:
        return _skip_reason(failed[0], states[failed[0]]), []
    retried = any(ended[n].attempt != chain[n].attempt for n in ended)
    return None, cancelled_tasks(jobs) if retried else []


def _conclude(ctx: RunContext, name: str, history: list[JobRecord]) -> RunState:
    """All tasks are final and none will be tried again: the stage's verdict."""
    reason = failure_reason(verdict_history(history))
    if reason is not None:
        return _finish(ctx, name, RunState.FAILED, reason)
    stage = ctx.spec.stage(name)
    for site in ctx.plans[name].sites:
        missing = with_retries(
            partial(
                staging.missing_outputs, ctx.driver(site), ctx.layout(site, name), stage.outputs
            ),
            f"checking the outputs of {name} on {site}",
            renewal=renewal_wait(ctx, name),
        )
        if missing:
            return _finish(
                ctx,
                name,
                RunState.FAILED,
                f"declared outputs missing on {site}: {', '.join(missing)}",
            )
    if stage.outputs:
        with_retries(
            lambda: record_outputs(ctx, name),
            f"recording the outputs of {name}",
            renewal=renewal_wait(ctx, name),
        )
    return _finish(ctx, name, RunState.COMPLETED, None)


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
                guard_handoff(ctx, name, needed, source_site, site)
                how = staging.stage_input(
                    ctx.driver(source_site), ctx.layout(source_site, needed), driver, layout
                )
                log.info("stage %s on %s: input %s %s", name, site, needed, how)
