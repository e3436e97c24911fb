"""Turning a stage attempt on one site into a `JobRequest`. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from flows.commands import render_argv
from flows.layout import StageLayout
from registry.runspec import RunSpec, Stage
from registry.site import Site
from sites.scheduler import JobRequest, JobResources, TaskSpec


def job_name(run_id: str, stage: str, attempt: int) -> str:
    """The deterministic scheduler job name (INTERFACE.md, "SLURM job names")."""
    return f"hpcfleet-{run_id}-{stage}-{attempt}"


def build_request(
    spec: RunSpec,
    stage: Stage,
    site: Site,
    *,
    run_id: str,
    attempt: int,
    layout: StageLayout,
    partition: str | None,
    qos: str | None = None,
    share: Sequence[tuple[int, str]] = (),
    after_ok: Sequence[str] = (),
    exclude_nodes: Sequence[str] = (),
    checkpoint: tuple[str, str] | None = None,
) -> JobRequest:
    """The job of `stage`'s attempt on `site`; `share` lists its (array index, value)s.

    Task i of the request runs array value share[i]; its metrics file is named after the
    array index in the spec, so that results from several sites never collide.
    `checkpoint`: (name, path on the site) of the checkpoint a `for_each` stage runs
    on; its outputs then go to a directory of their own, named after it.
    """
    # The site's own env is rendered by the scheduler ($VAR expands there); these are literal.
    env = dict(stage.env)
    env.update(
        HPCFLEET_RUN_ID=run_id,
        HPCFLEET_STAGE=stage.name,
        HPCFLEET_ATTEMPT=str(attempt),
        HPCFLEET_INPUTS=layout.inputs,
        HPCFLEET_OUTPUTS=layout.outputs,
    )
    if checkpoint is not None:
        env.update(
            HPCFLEET_CHECKPOINT=checkpoint[1],
            HPCFLEET_OUTPUTS=layout.checkpoint_outputs(checkpoint[0]),
        )
    slots: Sequence[tuple[int | None, str | None]] = share if share else [(None, None)]
    name = checkpoint[0] if checkpoint is not None else None
    tasks = tuple(
        _task(spec, stage, run_id, attempt, layout, index, value, name) for index, value in slots
    )
    resources = job_resources(stage, site, partition, qos)
    return JobRequest(
        name=job_name(run_id, stage.name, attempt),
        workdir=layout.work,
        tasks=tasks,
        env=env,
        resources=resources,
        log_dir=layout.logs(attempt),
        after_ok=tuple(after_ok),
        exclude_nodes=tuple(exclude_nodes),
        launcher=stage.launcher or "auto",
        container=stage.container,
        where=stage.where,
    )


def job_resources(stage: Stage, site: Site, partition: str | None, qos: str | None) -> JobResources:
    """What the job asks the scheduler for; `qos` is the planned one (None: the stage's)."""
    given = stage.resources
    if stage.where == "login":
        return JobResources(time_seconds=given.time)  # a login node has no partitions
    throttles = [t for t in (stage.array_parallelism, site.policy.max_running_tasks) if t]
    return JobResources(
        nodes=given.nodes,
        tasks_per_node=given.tasks_per_node,
        cpus=given.cpus,
        gpus=given.gpus,
        mem_mb=given.mem,
        time_seconds=given.time,
        partition=partition,
        qos=qos or given.qos,
        exclusive=given.exclusive,
        constraint=given.constraint,
        extra_flags=tuple(given.extra_flags),
        array_parallelism=min(throttles) if throttles else None,
    )


def _task(
    spec: RunSpec,
    stage: Stage,
    run_id: str,
    attempt: int,
    layout: StageLayout,
    index: int | None,
    value: str | None,
    checkpoint: str | None = None,
) -> TaskSpec:
    env = {"HPCFLEET_METRICS": layout.metrics_file(attempt, index or 0)}
    if value is not None and stage.array_key is not None:
        env["HPCFLEET_ARRAY_VALUE"] = value
        env["HPCFLEET_ARRAY_KEY"] = stage.array_key
        cell = stage.cells[index] if index is not None and index < len(stage.cells) else {}
        env.update({f"HPCFLEET_CELL_{key.upper()}": v for key, v in cell.items()})
    if stage.script is not None:
        # A script is bash: it reads $HPCFLEET_ARRAY_VALUE itself; no placeholders.
        return TaskSpec(script=stage.script, env=env, array_value=value)
    argv = render_argv(spec, stage, run_id, attempt, value, index, checkpoint)
    return TaskSpec(argv=argv, env=env, array_value=value)
