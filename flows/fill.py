"""`hpcfleet run fill`: submit exactly the cells of a matrix that have no result.

A fill is a new attempt of each array stage that has missing cells, restricted to those
cells, on the site where each cell ran last (so that the retry bookkeeping, which reads
the last job per site and array index, sees the fill's job as the cell's latest), or,
for a cell that never ran, on the site the plan gave it. Only cells with no result and
no live job are submitted, so a second fill while the first is queued submits nothing.

A fill reopens the run: the run and the filled stages are RUNNING again, the new jobs
are recorded and submitted, and the engine then drives the run as after a restart
(`run resume` reattaches to the fill's jobs, follows and collects them, and concludes
the stages and the run once more). Only stages that ended, and whose needs completed,
are filled; stages that depend on a filled stage are not run again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flows.control.liveness import orchestrator_alive
from flows.engine import EngineConfig, RunBusy, run_context
from flows.for_each import checkpoint_paths
from flows.planning import StagePlan
from flows.results import MissingCell, missing_cells
from flows.submission import submit_tasks
from flows.tasks import PlannedTask
from registry.records import JobRecord, StageRecord
from registry.results import read_results
from registry.runspec import RunSpec
from registry.states import RunState
from registry.store import Store


@dataclass(frozen=True)
class FillPlan:
    """What a fill submits per stage, and the missing cells it leaves alone."""

    tasks: dict[str, list[PlannedTask]]
    running: int  # missing cells whose job is live: a fill in progress
    blocked: list[str]  # stages with missing cells that cannot be filled, and why

    @property
    def cells(self) -> int:
        return sum(len(t) for t in self.tasks.values())


def plan_fill(
    spec: RunSpec,
    stages: Sequence[StageRecord],
    jobs: Sequence[JobRecord],
    missing: Sequence[MissingCell],
    plans: Mapping[str, StagePlan],
) -> FillPlan:
    """The tasks of a fill (pure): per stage, one per missing cell without a live job."""
    records = {s.name: s for s in stages}
    tasks: dict[str, list[PlannedTask]] = {}
    blocked: list[str] = []
    running = sum(m.why == "running" for m in missing)
    for name in dict.fromkeys(m.stage for m in missing if m.why != "running"):
        why = _unfillable(spec, records, name)
        if why is not None:
            blocked.append(f"{name}: {why}")
            continue
        last_site = {(j.checkpoint or "", j.array_index): j.site for j in jobs if j.stage == name}
        share_site = {i: site for site, share in plans[name].shares.items() for i, _ in share}
        values = spec.stage(name).array_values
        tasks[name] = [
            PlannedTask(
                last_site.get((m.checkpoint, m.index))
                or share_site.get(m.index)
                or plans[name].sites[0],
                m.index,
                values[m.index],
                m.checkpoint or None,
            )
            for m in missing
            if m.stage == name and m.why != "running"
        ]
    return FillPlan(tasks, running, blocked)


def _unfillable(spec: RunSpec, records: Mapping[str, StageRecord], name: str) -> str | None:
    record = records[name]
    if not record.state.is_final:
        return f"still {record.state.lower()}; fill once it has ended"
    for need in spec.stage(name).needs:
        if records[need].state is not RunState.COMPLETED:
            return f"needs {need}, which {records[need].state.lower()}"
    return None


def fill_plan(store: Store, run_id: str, plans: Mapping[str, StagePlan]) -> FillPlan:
    run = store.get_run(run_id)
    jobs = store.jobs(run_id)
    missing = missing_cells(run.spec, jobs, read_results(store, run_id))
    return plan_fill(run.spec, store.stages(run_id), jobs, missing, plans)


def fill_run(config: EngineConfig, run_id: str) -> FillPlan:
    """Reopen the run and submit its missing cells; the caller then drives the run
    (`flows.engine.execute_run`, or `run resume` in the background)."""
    from flows.launch import plans_for

    store = Store.open(config.database_url)
    try:
        run = store.get_run(run_id)
        plan = fill_plan(store, run_id, plans_for(store, run, store.stages(run_id))[0])
        if not plan.tasks:
            return plan
        if not run.state.is_final and orchestrator_alive(run):
            raise RunBusy(
                f"run {run_id} is being driven by {run.orchestrator}; fill it once it has ended"
            )
        for name in plan.tasks:
            store.update_stage(run_id, name, state=RunState.RUNNING, reason=None, ended=None)
        store.update_run(
            run_id, state=RunState.RUNNING, reason=None, ended=None, cancel_requested=False
        )
    finally:
        store.close()
    with run_context(config, run_id) as ctx:
        attempts = {s.name: s.attempt for s in ctx.store.stages(run_id)}
        for job in ctx.store.jobs(run_id):
            attempts[job.stage] = max(attempts[job.stage], job.attempt)
        for name, tasks in plan.tasks.items():
            # A `for_each` stage: one job (array) per checkpoint, each a new attempt.
            by_checkpoint: dict[str | None, list[PlannedTask]] = {}
            for task in tasks:
                by_checkpoint.setdefault(task.checkpoint, []).append(task)
            for checkpoint, checkpoint_tasks in by_checkpoint.items():
                attempts[name] += 1
                on = None
                if checkpoint is not None:
                    on = (checkpoint, checkpoint_paths(ctx, name, checkpoint))
                submit_tasks(ctx, name, attempts[name], checkpoint_tasks, checkpoint=on)
    return plan
