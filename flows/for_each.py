"""`for_each: checkpoint`: a stage that runs once per checkpoint of the stage it needs,
as soon as each checkpoint is ready, while that stage still runs.

Step of a run's life: the engine starts such a stage without waiting for its
checkpoint source (`flows.chains.awaited_needs`); `run_for_each` then loops until the
source has ended and every checkpoint's work has ended:

    ready?       the source declares `checkpoints`: those recorded (`flows.checkpoints`);
                 the source is itself `for_each`: the checkpoints its work completed on
    stage        only that checkpoint: on its own site the path itself, elsewhere a copy
                 through the existing handoff (checksums verified), under the stage's
                 inputs; one that disappeared is reported, not crashed on
    drive        one job (array) per (checkpoint, site), followed, collected and retried
                 like any attempt; every submission of the stage takes the next attempt
                 number, so job names, logs and metrics of checkpoints never collide

Each job records its checkpoint (`jobs.checkpoint`): a restarted orchestrator, or a
training job that was resumed and rewrote a checkpoint, never starts a checkpoint's
work twice; live jobs are reattached to.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from flows import staging
from flows.collect import collect_attempt
from flows.context import RunContext
from flows.credentials import renewal_wait
from flows.following import cancel_live, follow
from flows.residency import guard_handoff
from flows.retry import failed_nodes, failure_reason, next_tasks, with_retries
from flows.submission import reattach, submit_tasks
from flows.tasks import initial_tasks
from registry.checkpoints import read_checkpoints
from registry.errors import HpcfleetError
from registry.records import JobRecord
from registry.states import JobState, RunState
from registry.store import now
from sites import remote
from sites.errors import CommandFailed

log = logging.getLogger(__name__)

MAX_PARALLEL_CHECKPOINTS = 4  # checkpoints whose work is driven at once, per stage
WAIT_SECONDS = 1.0  # longest wait for news between two looks at the store


@dataclass(frozen=True)
class ReadyCheckpoint:
    """A checkpoint a `for_each` stage can run on: `path` relative to the outputs of
    the source stage on `site`."""

    name: str
    site: str
    path: str


@dataclass(frozen=True)
class CheckpointVerdict:
    name: str
    state: RunState  # CANCELLED: not run (gone before staging, or the run was cancelled)
    reason: str | None = None


class CheckpointGone(HpcfleetError):
    """The checkpoint is no longer where it was found (training overwrote it)."""


class _Attempts:
    """The stage's attempt numbers, handed out once each across its checkpoints."""

    def __init__(self, last: int) -> None:
        self._last = last
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last += 1
            return self._last


def run_for_each(ctx: RunContext, name: str) -> RunState:
    """Drive `for_each` stage `name` to a final state and return it."""
    spec = ctx.spec
    source = spec.checkpoint_source(name)
    assert source is not None  # the spec checks it
    records = {s.name: s for s in ctx.store.stages(ctx.run_id)}
    if records[name].state.is_final:
        return records[name].state
    for need in spec.stage(name).needs:
        state = records[need].state
        if need != source and state is not RunState.COMPLETED:
            return _finish(
                ctx, name, RunState.CANCELLED, f"skipped: needs {need}, which {state.lower()}"
            )
    history = ctx.store.jobs(ctx.run_id, name)
    if ctx.cancel_requested():
        cancel_live(ctx, [j for j in history if not j.state.is_final])
        return _finish(ctx, name, RunState.CANCELLED, "the run was cancelled")
    plan = ctx.plans[name]
    ctx.store.update_stage(
        ctx.run_id,
        name,
        state=RunState.RUNNING,
        sites=list(plan.sites),
        choice=plan.explanation,
        started=records[name].started or now(),
    )
    with_retries(
        lambda: _prepare(ctx, name, source),
        f"staging inputs of {name}",
        renewal=renewal_wait(ctx, name),
    )
    attempts = _Attempts(max([records[name].attempt, *(j.attempt for j in history)]))
    verdicts = _drive_checkpoints(ctx, name, source, attempts)
    return _conclude(ctx, name, source, verdicts)


def _drive_checkpoints(
    ctx: RunContext, name: str, source: str, attempts: _Attempts
) -> list[CheckpointVerdict]:
    """Start the work on each checkpoint as it becomes ready, until the source has ended
    and all the work has ended."""
    started: dict[str, Future[CheckpointVerdict]] = {}
    with ThreadPoolExecutor(MAX_PARALLEL_CHECKPOINTS, thread_name_prefix=f"{name}-each") as pool:
        while True:
            # Read before the checkpoints: once the source has ended, none is missed.
            source_ended = _has_ended(ctx, source)
            if not ctx.cancel_requested():
                for checkpoint in ready_checkpoints(ctx, source):
                    if checkpoint.name not in started:
                        log.info("stage %s: starting on checkpoint %s", name, checkpoint.name)
                        started[checkpoint.name] = pool.submit(
                            _guarded, ctx, name, source, checkpoint, attempts
                        )
            elif all(f.done() for f in started.values()):
                break
            if source_ended and all(f.done() for f in started.values()):
                break
            ctx.wait_for_change(WAIT_SECONDS)
        return [future.result() for future in started.values()]


def _has_ended(ctx: RunContext, stage: str) -> bool:
    progress = ctx.progress.get(stage)
    return progress is not None and progress.final


def ready_checkpoints(ctx: RunContext, source: str) -> list[ReadyCheckpoint]:
    """The checkpoints of `source` ready for the stages that run on each, oldest first."""
    stage = ctx.spec.stage(source)
    if stage.checkpoints is not None:
        return [
            ReadyCheckpoint(c.name, c.site, c.path)
            for c in read_checkpoints(ctx.store, ctx.run_id, source)
        ]
    by_checkpoint: dict[str, list[JobRecord]] = {}
    for job in ctx.store.jobs(ctx.run_id, source):
        if job.checkpoint is not None:
            by_checkpoint.setdefault(job.checkpoint, []).append(job)
    return [
        # A for_each stage writes each checkpoint's outputs to a directory named after it.
        ReadyCheckpoint(checkpoint, jobs[-1].site, checkpoint)
        for checkpoint, jobs in by_checkpoint.items()
        if all(j.state.is_final for j in jobs)
        and not next_tasks(stage, jobs)
        and failure_reason(jobs) is None
    ]


def checkpoint_history(ctx: RunContext, name: str, checkpoint: str) -> list[JobRecord]:
    return [j for j in ctx.store.jobs(ctx.run_id, name) if j.checkpoint == checkpoint]


def _guarded(
    ctx: RunContext, name: str, source: str, checkpoint: ReadyCheckpoint, attempts: _Attempts
) -> CheckpointVerdict:
    """The work on one checkpoint; a failure of it is that checkpoint's, not the run's."""
    try:
        return _run_checkpoint(ctx, name, source, checkpoint, attempts)
    except CheckpointGone as exc:
        log.warning("stage %s: %s", name, exc)
        return CheckpointVerdict(checkpoint.name, RunState.CANCELLED, str(exc))
    except HpcfleetError as exc:
        log.error("stage %s, checkpoint %s failed: %s", name, checkpoint.name, exc)
        return CheckpointVerdict(checkpoint.name, RunState.FAILED, str(exc))
    except Exception as exc:
        log.exception("stage %s, checkpoint %s crashed", name, checkpoint.name)
        reason = f"internal error: {exc.__class__.__name__}: {exc}"
        return CheckpointVerdict(checkpoint.name, RunState.FAILED, reason)


def _run_checkpoint(
    ctx: RunContext, name: str, source: str, checkpoint: ReadyCheckpoint, attempts: _Attempts
) -> CheckpointVerdict:
    stage = ctx.spec.stage(name)
    history = checkpoint_history(ctx, name, checkpoint.name)
    live = [j for j in history if not j.state.is_final]
    if live:  # a former orchestrator submitted it: reattach
        attempt = max(j.attempt for j in live)
        jobs = reattach(ctx, name, attempt, live) + [
            j for j in history if j.attempt == attempt and j.state.is_final
        ]
    else:
        tasks = next_tasks(stage, history) if history else initial_tasks(ctx.plans[name])
        if not tasks:
            return _verdict(checkpoint.name, history)
        attempt = attempts.next()
        jobs = submit_tasks(
            ctx,
            name,
            attempt,
            tasks,
            avoid=failed_nodes(history),
            checkpoint=(checkpoint.name, _stage_checkpoint(ctx, name, source, checkpoint)),
        )
    while True:
        jobs = follow(ctx, jobs)
        collect_attempt(ctx, name, attempt, jobs)
        if ctx.cancel_requested() or any(j.state is JobState.CANCELLED for j in jobs):
            return CheckpointVerdict(checkpoint.name, RunState.CANCELLED, "cancelled")
        history = checkpoint_history(ctx, name, checkpoint.name)
        tasks = next_tasks(stage, history)
        if not tasks:
            return _verdict(checkpoint.name, history)
        attempt = attempts.next()
        log.info("stage %s, checkpoint %s: attempt %d", name, checkpoint.name, attempt)
        paths = {j.site: _checkpoint_path(ctx, name, source, checkpoint, j.site) for j in history}
        jobs = submit_tasks(
            ctx,
            name,
            attempt,
            tasks,
            avoid=failed_nodes(history),
            checkpoint=(checkpoint.name, paths),
        )


def _verdict(checkpoint: str, history: Sequence[JobRecord]) -> CheckpointVerdict:
    reason = failure_reason(history)
    state = RunState.COMPLETED if reason is None else RunState.FAILED
    return CheckpointVerdict(checkpoint, state, reason)


def _checkpoint_path(
    ctx: RunContext, name: str, source: str, checkpoint: ReadyCheckpoint, site: str
) -> str:
    """Where the jobs of `name` on `site` find the checkpoint (HPCFLEET_CHECKPOINT)."""
    if site == checkpoint.site:
        return posixpath.join(ctx.layout(site, source).outputs, checkpoint.path)
    return posixpath.join(ctx.layout(site, name).input_of(source), checkpoint.path)


def checkpoint_paths(ctx: RunContext, name: str, checkpoint: str) -> dict[str, str]:
    """Where the jobs of `for_each` stage `name` find `checkpoint` on each of its sites,
    as staged for its first attempt (for `run fill`)."""
    source = ctx.spec.checkpoint_source(name)
    assert source is not None
    ready = {c.name: c for c in ready_checkpoints(ctx, source)}
    if checkpoint not in ready:
        raise CheckpointGone(f"checkpoint {checkpoint} of {source} is not ready any more")
    return {
        site: _checkpoint_path(ctx, name, source, ready[checkpoint], site)
        for site in ctx.plans[name].sites
    }


def _stage_checkpoint(
    ctx: RunContext, name: str, source: str, checkpoint: ReadyCheckpoint
) -> dict[str, str]:
    """Make the checkpoint (and nothing else of the source's outputs) reachable on every
    site of stage `name`; its path on each. `CheckpointGone` if it disappeared."""
    source_driver = ctx.driver(checkpoint.site)
    source_layout = ctx.layout(checkpoint.site, source)
    paths = {}
    for site in ctx.plans[name].sites:
        driver, layout = ctx.driver(site), ctx.layout(site, name)
        outputs = layout.checkpoint_outputs(checkpoint.name)
        umask = driver.site.environment.effective_umask
        staging.run_remote(
            driver, remote.make_dirs_command([outputs], umask=umask), remote.check_exit
        )
        guard_handoff(ctx, name, source, checkpoint.site, site)
        if site == checkpoint.site:
            command = remote.missing_paths_command(source_layout.outputs, [checkpoint.path])
            if staging.run_remote(driver, command, remote.parse_missing_paths):
                raise _gone(checkpoint, "before it was used")
        else:
            try:
                how = with_retries(
                    partial(
                        staging.stage_input,
                        source_driver,
                        source_layout,
                        driver,
                        layout,
                        checkpoint.path,
                    ),
                    f"staging checkpoint {checkpoint.name} to {site}",
                    renewal=renewal_wait(ctx, name),
                )
            except CommandFailed as exc:  # its manifest could not be made: it is gone
                raise _gone(checkpoint, f"before it was staged to {site} ({exc})") from exc
            log.info("stage %s on %s: checkpoint %s %s", name, site, checkpoint.name, how)
        paths[site] = _checkpoint_path(ctx, name, source, checkpoint, site)
    return paths


def _gone(checkpoint: ReadyCheckpoint, when: str) -> CheckpointGone:
    return CheckpointGone(
        f"checkpoint {checkpoint.name} ({checkpoint.path} on {checkpoint.site}) disappeared {when}"
    )


def _prepare(ctx: RunContext, name: str, source: str) -> None:
    """Work dir, the spec's files and the outputs of needs other than the checkpoint
    source, on every chosen site."""
    for site in ctx.plans[name].sites:
        driver, layout = ctx.driver(site), ctx.layout(site, name)
        staging.prepare_dirs(driver, layout, 1)
        staging.upload_files(driver, layout, ctx.files)
        for needed in ctx.spec.stage(name).needs:
            if needed == source:
                continue
            for source_site in ctx.plans[needed].sites:
                guard_handoff(ctx, name, needed, source_site, site)
                staging.stage_input(
                    ctx.driver(source_site), ctx.layout(source_site, needed), driver, layout
                )


def _conclude(
    ctx: RunContext, name: str, source: str, verdicts: list[CheckpointVerdict]
) -> RunState:
    """The stage's verdict from its checkpoints' verdicts."""
    if ctx.cancel_requested():
        return _finish(ctx, name, RunState.CANCELLED, "cancelled")
    failed = [v for v in verdicts if v.state is RunState.FAILED]
    skipped = [v for v in verdicts if v.state is RunState.CANCELLED]
    notes = "; ".join(v.reason or v.name for v in skipped) or None
    if failed:
        more = f" (and {len(failed) - 1} more checkpoints)" if len(failed) > 1 else ""
        return _finish(
            ctx, name, RunState.FAILED, f"checkpoint {failed[0].name}: {failed[0].reason}{more}"
        )
    if not any(v.state is RunState.COMPLETED for v in verdicts):
        state = {s.name: s.state for s in ctx.store.stages(ctx.run_id)}[source]
        if state is not RunState.COMPLETED:
            return _finish(
                ctx, name, RunState.CANCELLED, f"skipped: needs {source}, which {state.lower()}"
            )
        return _finish(ctx, name, RunState.COMPLETED, notes or f"{source} wrote no checkpoint")
    return _finish(ctx, name, RunState.COMPLETED, notes)


def _finish(ctx: RunContext, name: str, state: RunState, reason: str | None) -> RunState:
    ctx.store.update_stage(ctx.run_id, name, state=state, reason=reason, ended=now())
    log.info("stage %s: %s%s", name, state, f" ({reason})" if reason else "")
    return state
