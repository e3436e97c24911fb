"""Same-site chains: a stage queued with `afterok` right behind the stages it needs.

Step of a run's life: decided once when the run's context opens (`chainable_stages`),
read when the engine schedules the stages (`awaited_needs`: a chained stage does not
wait for its needs to end), and when the stage runner submits a chained stage
(`afterok_ids`: the needs' live jobs it is queued behind). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from flows.planning import StagePlan
from registry.runspec import RunSpec

if TYPE_CHECKING:  # the context imports the store; chains are pure
    from flows.context import StageProgress


def chainable_stages(spec: RunSpec, plans: Mapping[str, StagePlan]) -> set[str]:
    """Stages that can be submitted with `afterok` right behind the stages they need:
    they and all their needs run on one and the same single site, as batch jobs (a
    login-node task has no `afterok`: it neither waits for one nor is waited for), and
    no need runs in segments (`chain: N`: its last queued segment is dropped when an
    earlier one completes, which would cancel a job queued behind it)."""
    chained = set()
    for stage in spec.stages:
        sites = plans[stage.name].sites
        if (
            stage.for_each is None  # it waits for checkpoints, not for jobs to queue behind
            and stage.needs
            and len(sites) == 1
            and all(plans[need].sites == sites for need in stage.needs)
            and all(s.where == "batch" for s in (stage, *map(spec.stage, stage.needs)))
            and not any(spec.stage(need).chain for need in stage.needs)
        ):
            chained.add(stage.name)
    return chained


def awaited_needs(spec: RunSpec, chained: set[str]) -> dict[str, list[str]]:
    """For every stage, the needs whose end the engine awaits before starting it.

    None for a chained stage: it waits for its needs' submissions itself
    (`RunContext.wait_for_needs`) and is queued behind them with `afterok`. A
    `for_each: checkpoint` stage starts while the stage its checkpoints come from runs
    (`flows.for_each`), so it awaits only its other needs.
    """
    return {
        stage.name: []
        if stage.name in chained
        else [n for n in stage.needs if n != spec.checkpoint_source(stage.name)]
        for stage in spec.stages
    }


def afterok_ids(chain: Mapping[str, StageProgress] | None) -> tuple[str, ...]:
    """Scheduler ids to wait for with afterok: the live jobs of the needed stages (an
    array task's id "12_3" waits for its whole array "12")."""
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
