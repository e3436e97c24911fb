"""The `Scheduler` protocol and the job documents it takes and returns.

A scheduler renders a job script, submits it, reports the status of MANY jobs in ONE
call, cancels, and finds jobs again by their deterministic name after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from registry.states import JobState


@dataclass(frozen=True)
class TaskSpec:
    """What one task of a job runs: an argv (quoted when rendered) or a bash script,
    with the environment of that task alone (HPCFLEET_ARRAY_VALUE, HPCFLEET_METRICS)."""

    argv: tuple[str, ...] = ()
    script: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    array_value: str | None = None


@dataclass(frozen=True)
class JobResources:
    """Resources of one job (per array task)."""

    nodes: int = 1
    tasks_per_node: int = 1
    cpus: int = 1  # per task
    gpus: int = 0  # per node
    mem_mb: int | None = None  # 0: all of each node's memory
    time_seconds: int = 3600
    partition: str | None = None
    qos: str | None = None  # None: the site's
    exclusive: bool = False
    constraint: str | None = None
    extra_flags: tuple[str, ...] = ()  # the stage's own; they win over the site's
    array_parallelism: int | None = None  # at most this many array tasks at once


@dataclass(frozen=True)
class JobRequest:
    """Everything a scheduler needs to run one job (or one job array).

    `tasks` has one entry for a plain job and one per array index for an array; task
    `i` runs with `HPCFLEET_ARRAY_INDEX=i`. Paths are absolute paths on the site.
    """

    name: str  # hpcfleet-<run_id>-<stage>-<attempt>
    workdir: str  # the job's working directory
    tasks: tuple[TaskSpec, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    resources: JobResources = field(default_factory=JobResources)
    log_dir: str = ""  # stdout/stderr go to <log_dir>/<index>.out / .err
    after_ok: tuple[str, ...] = ()  # job ids that must complete first
    # Job ids that must all have ended other than COMPLETED (TIMEOUT, NODE_FAIL, ...);
    # if one completes, this job never runs (a chain's segments, `flows.segments`).
    after_not_ok: tuple[str, ...] = ()
    # A chain's segments (flows.segments): the job writes its command's exit status to
    # `end_marker` when the command returns by itself (a job killed for its time limit
    # never does), and exits at once, doing nothing, if an earlier segment's exists.
    end_marker: str | None = None
    earlier_end_markers: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    # (outputs of a needed stage, its input dir): made a tree of hard links when the job
    # starts, for a job queued behind that stage (afterok) on the same site.
    link_inputs: tuple[tuple[str, str], ...] = ()
    # How tasks fan out (sites.launcher): "auto" = srun when more than one task.
    launcher: Literal["auto", "srun", "none"] = "auto"
    container: str | None = None  # None: the site's; "none": no container; else an image
    # "login": a process on the site's login node (sites.login), not a batch job.
    where: Literal["batch", "login"] = "batch"

    @property
    def is_array(self) -> bool:
        return len(self.tasks) > 1 or self.tasks[0].array_value is not None

    def stdout_path(self, index: int) -> str:
        return f"{self.log_dir}/{index}.out"

    def stderr_path(self, index: int) -> str:
        return f"{self.log_dir}/{index}.err"


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job or one array task.

    `job_id` is the scheduler's id of the task: "123" for a plain job, "123_4" for
    index 4 of array 123.
    """

    job_id: str
    state: JobState
    exit_code: int | None = None
    name: str | None = None
    started: datetime | None = None
    ended: datetime | None = None
    elapsed_seconds: float | None = None
    gpu_hours: float = 0.0
    node: str | None = None
    reason: str | None = None  # the scheduler's own state / reason text
    # Set on a PENDING job that the scheduler will never start as submitted (it is over a
    # per-job limit): why, for the user. The job is still queued until cancelled.
    never_starts: str | None = None

    @property
    def array_index(self) -> int | None:
        _, sep, index = self.job_id.partition("_")
        return int(index) if sep and index.isdigit() else None


def job_id_order(job_id: str) -> tuple[str, int]:
    """Sort key of base job ids of one site: SLURM's "123" and the login node's "L7"
    (sites.login) each in the order they were submitted."""
    prefix = job_id.rstrip("0123456789")
    digits = job_id[len(prefix) :]
    return prefix, int(digits) if digits else -1


class Scheduler(Protocol):
    """Run jobs on a site."""

    def render(self, request: JobRequest) -> str:
        """The complete job script for `request` (pure: no I/O)."""
        ...

    def submit(self, request: JobRequest) -> str:
        """Submit and return the job id (for arrays the array's base id)."""
        ...

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Status of many jobs in ONE scheduler call.

        Array ids expand to one entry per task ("123_0", "123_1", ...). Ids the
        scheduler no longer knows are absent from the result.
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the given jobs (and every task of the given arrays)."""
        ...

    def find_by_name(self, name: str) -> list[JobStatus]:
        """Jobs (and array tasks) with this exact job name, to reattach after a crash."""
        ...

    def exclude_nodes(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        """Keep the given queued jobs off `nodes` (their whole exclusion list: it
        replaces the one given at submission). Jobs that already started keep theirs."""
        ...
