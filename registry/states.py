"""States of runs, stages and jobs: which are final, and what happens to each downstream.

The tables in the class docstrings of `RunState` and `JobState` are the reference for
what each state means to the rest of hpcfleet (the stage retry policy in `flows.retry`,
`hpcfleet run resume`); `tests/unit/test_states.py` checks them against the code.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """State of a run or of one of its stages (INTERFACE.md).

    ========= ===== ==============================================================
    state     final downstream
    ========= ===== ==============================================================
    PENDING   no    not started: the stage waits for its needs to end (a chained
                    stage: for their submissions). A resumed run drives it.
    RUNNING   no    jobs are submitted and followed. A resumed run reattaches to
                    the live jobs of the current attempt; never submits twice.
    COMPLETED yes   every task's last job completed and the declared outputs
                    exist. Stages that need it start; never run again.
    FAILED    yes   a task failed beyond its `retries`/`max_resumes`, outputs are
                    missing, or a site error. Stages that need it are CANCELLED
                    ("skipped"); the run ends FAILED with its reason. Final: a
                    resume does not retry it.
    CANCELLED yes   cancelled on request (live jobs are cancelled), or skipped
                    because a need did not complete. Never run again.
    ========= ===== ==============================================================
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_RUN_STATES


_FINAL_RUN_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class JobState(StrEnum):
    """State of one job (one scheduler job, or one task of an array) on one site.

    Scheduler-specific names (SLURM's 20-odd states) are mapped onto these in the
    scheduler's own module (e.g. `sites.slurm.SLURM_STATES`). `policy` is what the
    stage retry policy (`flows.retry`) makes of a final state: `success`; `retry`
    (tried again while the task failed at most `retries` times, on other nodes);
    `resume` (resubmitted while the stage is `resumable` and the task was stopped at
    most `max_resumes` times; otherwise the stage fails); `failure` (never tried
    again: the stage fails); `cancel` (the stage ends CANCELLED). Every job that is
    not final counts against its site's `policy.max_queued_jobs`.

    ============= ===== ======= ======================================================
    state         final policy  downstream
    ============= ===== ======= ======================================================
    SUBMITTING    no    -       recorded just before the submit call, no scheduler
                                id yet. A restarted orchestrator finds the job by
                                its name and adopts it, or submits it again.
    PENDING       no    -       queued on the site (or waiting for `afterok`);
                                followed.
    RUNNING       no    -       running; followed.
    COMPLETED     yes   success the task is done; the stage completes when all
                                its tasks are (and its declared outputs exist).
    FAILED        yes   retry   the task failed (non-zero exit, or the site refused
                                the submission). Counts against `retries`; the
                                next attempt avoids its node.
    NODE_FAIL     yes   retry   the node broke, the runner vanished, or the
                                scheduler forgot the job for 10 minutes. As FAILED.
    TIMEOUT       yes   resume  the time limit was hit. Not a failure while
                                `resumable` has resumes left; then the stage fails
                                ("raise resources.time or set resumable").
    PREEMPTED     yes   resume  stopped by the site for other work; as TIMEOUT.
    OUT_OF_MEMORY yes   failure never retried: the same memory would run out again
                                ("raise resources.mem").
    CANCELLED     yes   cancel  cancelled by a user, or a dependency (`afterok`)
                                failed. In a chain whose need was retried and then
                                succeeded, the task is submitted again.
    UNKNOWN       no    -       a state the scheduler reported that we do not know;
                                never stored over a known state; keep polling.
    ============= ===== ======= ======================================================
    """

    SUBMITTING = "SUBMITTING"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_JOB_STATES

    @property
    def is_success(self) -> bool:
        return self is JobState.COMPLETED

    @property
    def is_retryable_failure(self) -> bool:
        """Failures that `retries:` covers (the job or its node broke)."""
        return self in (JobState.FAILED, JobState.NODE_FAIL)

    @property
    def is_resumable_interruption(self) -> bool:
        """Interruptions that `resumable: true` covers (the job was stopped, not broken)."""
        return self in (JobState.TIMEOUT, JobState.PREEMPTED)


_FINAL_JOB_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.PREEMPTED,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
    }
)
