"""What to try again, and what not: the two retry policies of a run.

1. `with_retries` rides out a site's bad minutes during any step of a run (staging,
   checking outputs): it retries an operation while its error says a retry can help
   (`transient`), with exponential backoff, up to a deadline; expired credentials
   are waited out without one (`flows.credentials`).
2. The stage retry policy decides, once every job of a stage's attempt is final, what
   the next attempt runs (`next_tasks`), which nodes it avoids (`failed_nodes`) and,
   when nothing is left to try, why the stage failed (`failure_reason`). These are
   pure functions of the stage's spec and its job history (every attempt's jobs, in
   the order they were recorded); the table in `registry.states.JobState` says what
   they do with each job state.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from flows.credentials import RenewalWait, await_renewal
from flows.tasks import PlannedTask
from registry.errors import HpcfleetError
from registry.records import JobRecord
from registry.runspec import Stage
from registry.states import JobState
from sites.errors import CredentialsExpired

T = TypeVar("T")
log = logging.getLogger(__name__)

# Long enough for a login node's sshd restart or a short network cut; a site that stays
# away longer fails the stage with the reason.
MAX_WAIT_SECONDS = 300.0

TaskKey = tuple[str, int | None]  # (site, array index)


def with_retries(
    operation: Callable[[], T],
    what: str,
    *,
    max_wait: float = MAX_WAIT_SECONDS,
    first_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    renewal: RenewalWait | None = None,
) -> T:
    """`operation()`, retried on transient HpcfleetErrors until `max_wait` has passed.
    Expired credentials are waited out with no deadline (`flows.credentials`), shown
    and ended early through `renewal`."""
    waited, delay = 0.0, first_delay
    wait, expired = renewal or RenewalWait(), False
    while True:
        try:
            result = operation()
        except CredentialsExpired as exc:
            await_renewal(exc, wait, first=not expired, sleep=sleep)
            expired = True
            continue
        except HpcfleetError as exc:
            if not exc.transient or waited + delay > max_wait:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
            sleep(delay)
            waited += delay
            delay = min(delay * 2, 60.0)
            continue
        if expired:
            wait.note(None)
        return result


def jobs_by_task(history: Sequence[JobRecord]) -> dict[TaskKey, list[JobRecord]]:
    """Every attempt of each task, oldest first, tasks in the order first recorded."""
    by_task: dict[TaskKey, list[JobRecord]] = defaultdict(list)
    for job in history:
        by_task[(job.site, job.array_index)].append(job)
    return dict(by_task)


def next_tasks(stage: Stage, history: Sequence[JobRecord]) -> list[PlannedTask]:
    """Tasks whose last attempt failed in a way the stage's policy says to try again.

    A retryable failure (FAILED, NODE_FAIL) is tried again while the task has failed so
    at most `retries` times; a resumable interruption (TIMEOUT, PREEMPTED) while the
    stage is `resumable` and the task was interrupted at most `max_resumes` times.
    """
    tasks = []
    for jobs in jobs_by_task(history).values():
        last = jobs[-1]
        failures = sum(j.state.is_retryable_failure for j in jobs)
        interruptions = sum(j.state.is_resumable_interruption for j in jobs)
        if (last.state.is_retryable_failure and failures <= stage.retries) or (
            last.state.is_resumable_interruption
            and stage.resumable
            and interruptions <= stage.max_resumes
        ):
            tasks.append(PlannedTask.of_job(last))
    return sorted(tasks, key=lambda t: (t.site, t.index or 0))


def failed_nodes(history: Sequence[JobRecord]) -> dict[str, set[str]]:
    """Per site, the nodes on which a task of this stage failed or whose node failed:
    the next attempt excludes them."""
    nodes: dict[str, set[str]] = defaultdict(set)
    for job in history:
        if job.state.is_retryable_failure and job.node and job.node != "localhost":
            nodes[job.site].add(job.node)
    return dict(nodes)


def cancelled_tasks(jobs: Sequence[JobRecord]) -> list[PlannedTask]:
    """The tasks of an attempt that ended CANCELLED. A chained attempt's jobs end so when
    the need they waited on (afterok) failed; they run again once the need's retry
    succeeded."""
    return [PlannedTask.of_job(j) for j in jobs if j.state is JobState.CANCELLED]


def failure_reason(history: Sequence[JobRecord]) -> str | None:
    """Why the stage failed, once `next_tasks` is empty: the first task whose last
    attempt did not complete, said so that the user knows what to change. None when
    every task's last attempt completed."""
    last_jobs = [jobs[-1] for jobs in jobs_by_task(history).values()]
    failed = [j for j in last_jobs if j.state is not JobState.COMPLETED]
    if not failed:
        return None
    attempts = len({j.attempt for j in history})
    return _describe_failure(failed[0], attempts)


def _describe_failure(job: JobRecord, attempts: int) -> str:
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
