"""The SLURM batch script of a job: `#SBATCH` header + the shared job body. Pure.

`#SBATCH` lines are read by sbatch's own directive parser, not by a shell. That parser
splits on whitespace, honours '...' and "..." and treats a backslash as an escape
character everywhere, even between single quotes (sbatch/opt.c, `_get_argument`). So a
value is quoted with `shlex.quote` (as submitit does) after doubling its backslashes;
the result reads back as exactly the original value, and nothing in it ever reaches a
shell. A newline would end the directive and start a line of script, so values with
line breaks are refused.
"""

from __future__ import annotations

import shlex

from registry.common import format_memory, format_walltime
from registry.site import Environment, SlurmSettings
from sites.jobscript import render_job_body
from sites.scheduler import JobRequest

_LINE_BREAKS = ("\n", "\r", "\x00")


def sbatch_quote(value: str, field: str) -> str:
    """Quote `value` for an `#SBATCH` line so that sbatch reads back exactly `value`.

    Raises ValueError naming `field` for values no quoting can carry through.
    """
    if any(c in value for c in _LINE_BREAKS):
        raise ValueError(f"{field}: {value!r} contains a line break, which #SBATCH cannot hold")
    if not value:
        return "''"
    return shlex.quote(value.replace("\\", "\\\\"))


def escape_filename_pattern(path: str) -> str:
    """Escape `%` so sbatch takes it literally in --output/--error (`%%` -> `%`).

    A backslash anywhere would switch off all replacements (also our `%a`), so a path
    holding one is refused.
    """
    if "\\" in path:
        raise ValueError(
            f"log_dir: {path!r} contains a backslash, which makes sbatch ignore %a in --output"
        )
    return path.replace("%", "%%")


def sbatch_options(request: JobRequest, slurm: SlurmSettings) -> list[tuple[str, str]]:
    """(option, value) pairs of the header, values not yet quoted.

    Order is fixed so the rendered script is stable (golden files pin it).
    """
    resources = request.resources
    partition = resources.partition or slurm.default_partition.name
    options: list[tuple[str, str]] = [("--job-name", request.name)]
    if slurm.account:
        options.append(("--account", slurm.account))
    options.append(("--partition", partition))
    if slurm.qos:
        options.append(("--qos", slurm.qos))
    options.append(("--time", format_walltime(resources.time_seconds)))
    options.append(("--nodes", str(resources.nodes)))
    if resources.tasks_per_node > 1:  # one task per node is sbatch's own default
        options.append(("--ntasks-per-node", str(resources.tasks_per_node)))
    options.append(("--cpus-per-task", str(resources.cpus)))
    if resources.mem_mb is not None:
        options.append(("--mem", format_memory(resources.mem_mb)))
    if resources.gpus > 0:
        options.append(("--gres", f"gpu:{resources.gpus}"))
    if request.is_array:
        options.append(("--array", f"0-{len(request.tasks) - 1}"))
    if request.after_ok:
        options.append(("--dependency", "afterok:" + ":".join(request.after_ok)))
        # Without this a job whose dependency failed stays PENDING forever
        # (Reason=DependencyNeverSatisfied) unless the site set kill_invalid_depend.
        options.append(("--kill-on-invalid-dep", "yes"))
    if request.exclude_nodes:
        options.append(("--exclude", ",".join(request.exclude_nodes)))
    # %a is the array index; a plain job writes what the orchestrator reads as index 0.
    index = "%a" if request.is_array else "0"
    log_dir = escape_filename_pattern(request.log_dir)
    options.append(("--output", f"{log_dir}/{index}.out"))
    options.append(("--error", f"{log_dir}/{index}.err"))
    options.append(("--chdir", request.workdir))
    return options


def render_sbatch_header(request: JobRequest, slurm: SlurmSettings) -> list[str]:
    """The `#SBATCH` lines: our options, then the site's extra flags (which win)."""
    lines = []
    for option, value in sbatch_options(request, slurm):
        lines.append(f"#SBATCH {option}={sbatch_quote(value, option.lstrip('-'))}")
    # Each extra flag is one argument, e.g. "--constraint=gpu" or "--exclusive".
    lines.extend(f"#SBATCH {sbatch_quote(flag, 'extra_flags')}" for flag in slurm.extra_flags)
    return lines


def render_sbatch(request: JobRequest, slurm: SlurmSettings, environment: Environment) -> str:
    """The complete batch script for `request` on a site with these settings."""
    if not request.tasks:
        raise ValueError("a job needs at least one task")
    if not request.log_dir:
        raise ValueError("log_dir: a SLURM job needs a log directory for its output")
    lines: list[str] = ["#!/bin/bash", *render_sbatch_header(request, slurm)]
    lines.append('export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"')
    body = render_job_body(request, environment, scheduler="slurm", srun_flags=slurm.srun_flags)
    return "\n".join(lines) + "\n" + body
