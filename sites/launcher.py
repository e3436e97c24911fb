"""The launcher: how one task's command fans out over the job's allocation. Pure.

A batch script runs once, on the first node of the allocation. A stage with several
nodes or several tasks per node needs a launcher to start its command once per task:

- `srun` (SLURM): `srun [flags] bash -c WRAPPER hpcfleet-task [container exec] argv`.
  srun runs OUTSIDE the container and the container once per task: the "hybrid model"
  of Apptainer's MPI guide (the launcher outside, one container per rank), the form
  LUMI's container docs show (`srun singularity exec ... image cmd`). srun does not
  exist in the image, and outside it keeps the site's PMI wiring. The small
  per-task WRAPPER (a constant, quoted once) evaluates SLURM's per-task variables
  INSIDE each task: RANK=SLURM_PROCID, LOCAL_RANK=SLURM_LOCALID, NODE_RANK=SLURM_NODEID,
  WORLD_SIZE=SLURM_NTASKS. MASTER_ADDR (first host of the allocation) and MASTER_PORT
  (PORT_BASE + job id mod PORT_SPAN) are set once per job, before the tasks start.
- `local` (a local site: one machine): the command is started `tasks_per_node` times
  in the background with RANK/LOCAL_RANK/WORLD_SIZE set per copy, MASTER_ADDR=127.0.0.1;
  the task fails if any copy fails. `nodes` is ignored there (a local site is one node).
- `none`: the command runs once on the batch host, as before; it calls srun itself.

A variable the site's or the stage's `env` sets (e.g. MASTER_PORT) is never overridden.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from registry.site import Container, Environment
from sites.scheduler import JobRequest, TaskSpec

# What plan_launch chose; a request asks for "auto" (srun when it takes more than one
# task, none otherwise), "srun" or "none" (JobRequest.launcher).
LauncherKind = Literal["srun", "local", "none"]
NO_CONTAINER = "none"

# Per-task variable -> the SLURM variable srun sets in each task.
SLURM_RANK_VARIABLES = {
    "RANK": "SLURM_PROCID",
    "LOCAL_RANK": "SLURM_LOCALID",
    "NODE_RANK": "SLURM_NODEID",
    "WORLD_SIZE": "SLURM_NTASKS",
}
JOB_VARIABLES = ("MASTER_ADDR", "MASTER_PORT")
DISTRIBUTED_VARIABLES = (*JOB_VARIABLES, *SLURM_RANK_VARIABLES)
# $0 of the per-task wrapper: what `ps` and error messages show.
WRAPPER_NAME = "hpcfleet-task"
FAN_OUT_FUNCTION = "hpcfleet_fan_out"
# MASTER_PORT = PORT_BASE + job id mod PORT_SPAN: stable per job, above the well-known
# and registered ports most services use, below Linux's ephemeral range (32768+).
PORT_BASE = 20000
PORT_SPAN = 12000


@dataclass(frozen=True)
class Launch:
    """How every task of one job is launched; built by `plan_launch`."""

    kind: LauncherKind
    container: Container | None = None
    srun_flags: tuple[str, ...] = ()
    cpus_per_task: int = 1
    tasks_per_node: int = 1
    preset: frozenset[str] = frozenset()  # distributed variables the env already sets


def plan_launch(
    request: JobRequest,
    scheduler: Literal["slurm", "local"],
    environment: Environment,
    srun_flags: Sequence[str] = (),
) -> Launch:
    """The launch of `request` on a site with this scheduler, environment and srun flags."""
    resources = request.resources
    # A local site is one machine: there, only tasks_per_node fans out.
    many = resources.tasks_per_node > 1 or (scheduler == "slurm" and resources.nodes > 1)
    wanted = request.launcher
    if wanted == "none" or (wanted == "auto" and not many):
        kind: LauncherKind = "none"
    else:
        kind = "srun" if scheduler == "slurm" else "local"
    env_names = {*environment.env, *request.env}
    preset = {name for name in DISTRIBUTED_VARIABLES if name in env_names}
    return Launch(
        kind=kind,
        container=choose_container(environment.container, request.container),
        srun_flags=tuple(srun_flags),
        cpus_per_task=resources.cpus,
        tasks_per_node=resources.tasks_per_node,
        preset=frozenset(preset),
    )


def choose_container(site: Container | None, stage: str | None) -> Container | None:
    """The stage's choice: None -> the site's container; "none" -> no container; else
    that image, run with the site's runtime, options and binds (apptainer if none)."""
    if stage is None:
        return site
    if stage == NO_CONTAINER:
        return None
    if site is None:
        return Container(image=stage)
    return site.model_copy(update={"image": stage})


def container_argv(container: Container | None) -> tuple[str, ...]:
    """`apptainer exec [options] [--bind a,b] IMAGE`: the prefix of a command run inside."""
    if container is None:
        return ()
    binds = ("--bind", ",".join(container.binds)) if container.binds else ()
    return (container.runtime, "exec", *container.options, *binds, container.image)


def task_argv(task: TaskSpec) -> tuple[str, ...]:
    """What one task runs: its argv, or its script through bash."""
    if task.script is not None:
        return ("bash", "-c", task.script)
    if task.argv:
        return task.argv
    raise ValueError("a task needs an argv or a script")


def rank_wrapper(preset: Collection[str]) -> str:
    """The per-task wrapper's bash text: export the rank variables from SLURM's own, as
    evaluated inside each task, then exec the command (its argv is "$@")."""
    exports = [
        f'{name}="${{{slurm}}}"'
        for name, slurm in SLURM_RANK_VARIABLES.items()
        if name not in preset
    ]
    prefix = f"export {' '.join(exports)}; " if exports else ""
    return prefix + 'exec "$@"'


def launch_prelude(launch: Launch) -> list[str]:
    """Job-level lines before the tasks: MASTER_ADDR/MASTER_PORT, the fan-out helper."""
    if launch.kind == "none":
        return []
    port = f"$(({PORT_BASE} + {{id}} % {PORT_SPAN}))"
    if launch.kind == "srun":
        job_values = {
            "MASTER_ADDR": '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"',
            "MASTER_PORT": port.format(id="SLURM_JOB_ID"),
        }
    else:
        job_values = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port.format(id="$$")}
    lines = [
        f"export {name}={value}" for name, value in job_values.items() if name not in launch.preset
    ]
    if launch.kind == "local":
        lines.extend(_fan_out_function(launch))
    return lines


def _fan_out_function(launch: Launch) -> list[str]:
    """A bash function that starts its argv N times with the rank variables set and
    fails if any copy fails (all copies are in the job's process group: a cancel stops
    them all)."""
    per_copy = {"RANK": "$rank", "LOCAL_RANK": "$rank", "NODE_RANK": "0", "WORLD_SIZE": "$n"}
    assignments = " ".join(f"{k}={v}" for k, v in per_copy.items() if k not in launch.preset)
    return [
        f"{FAN_OUT_FUNCTION}() {{",
        "  local n=$1 rank status=0 pids=()",
        "  shift",
        "  for ((rank = 0; rank < n; rank++)); do",
        f'    {assignments} "$@" &',
        "    pids+=($!)",
        "  done",
        '  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done',
        "  return $status",
        "}",
    ]


def launch_command(task: TaskSpec, launch: Launch) -> str:
    """The one shell line that runs `task` under `launch`, every value quoted once."""
    inner = [*container_argv(launch.container), *task_argv(task)]
    if launch.kind == "none":
        return shlex.join(inner)
    if launch.kind == "local":
        return shlex.join([FAN_OUT_FUNCTION, str(launch.tasks_per_node), *inner])
    # srun does not inherit --cpus-per-task from sbatch in SLURM 22.05-23.02; say it.
    srun = ["srun", f"--cpus-per-task={launch.cpus_per_task}", "--kill-on-bad-exit=1"]
    wrapper = ["bash", "-c", rank_wrapper(launch.preset), WRAPPER_NAME]
    return shlex.join([*srun, *launch.srun_flags, *wrapper, *inner])
