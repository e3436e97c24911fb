"""States of runs, stages and jobs, and which of them are final."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """State of a run or of one of its stages (INTERFACE.md)."""

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
    scheduler's own module (e.g. `sites.slurm.SLURM_STATES`).
    """

    SUBMITTING = "SUBMITTING"  # recorded before the submit call; no scheduler id yet
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"  # the scheduler reported something we do not know; keep polling

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
