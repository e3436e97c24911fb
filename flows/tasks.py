"""`PlannedTask`: one unit of work of a stage on one site, before it becomes a job.

Step of a run's life: between planning (`flows.planning` chose the sites and split an
array over them) and submission (`flows.submission` turns the tasks of one site into
one `JobRequest`, whose `TaskSpec`s say what each task runs). The retry policy
(`flows.retry`) answers with the planned tasks of the next attempt. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.planning import StagePlan
from registry.records import JobRecord


@dataclass(frozen=True)
class PlannedTask:
    """The stage itself on one site, or one value of its array there."""

    site: str
    index: int | None  # array index in the spec
    value: str | None  # array value
    checkpoint: str | None = None  # what a `for_each: checkpoint` stage's task runs on

    @classmethod
    def of_job(cls, job: JobRecord) -> PlannedTask:
        """The task a recorded job ran, to run it again."""
        return cls(job.site, job.array_index, job.array_value, job.checkpoint)


def initial_tasks(plan: StagePlan) -> list[PlannedTask]:
    """The tasks of a stage's first attempt: one per array value, or the stage once."""
    if not plan.shares:
        return [PlannedTask(plan.sites[0], None, None)]
    return [PlannedTask(site, i, v) for site, share in plan.shares.items() for i, v in share]
