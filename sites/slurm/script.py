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
    """(option, value) pairs of the header, values not yet quoted; an empty value
    renders as a bare flag (`--exclusive`).

    Order is fixed so the rendered script is stable (golden files pin it).
    """
    resources = request.resources
    partition = resources.partition or slurm.default_partition.name
    options: list[tuple[str, str]] = [("--job-name", request.name)]
    if slurm.account:
        options.append(("--account", slurm.account))
    options.append(("--partition", partition))
    qos = resources.qos or slurm.qos
    if qos:
        options.append(("--qos", qos))
    options.append(("--time", format_walltime(resources.time_seconds)))
    options.append(("--nodes", str(resources.nodes)))
    if resources.tasks_per_node > 1:  # one task per node is sbatch's own default
        options.append(("--ntasks-per-node", str(resources.tasks_per_node)))
    options.append(("--cpus-per-task", str(resources.cpus)))
    if resources.mem_mb is not None:
        # --mem=0 is SLURM's "all the memory of each node".
        options.append(("--mem", format_memory(resources.mem_mb) if resources.mem_mb else "0"))
    if resources.gpus > 0:
        options.append(("--gres", f"gpu:{resources.gpus}"))
    if resources.exclusive:
        options.append(("--exclusive", ""))
    if resources.constraint:
        options.append(("--constraint", resources.constraint))
    if request.is_array:
        options.append(("--array", array_range(len(request.tasks), resources.array_parallelism)))
    dependency = dependency_option(request)
    if dependency:
        options.append(("--dependency", dependency))
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


def dependency_option(request: JobRequest) -> str:
    """`afterok:1:2,afternotok:3:4` (a comma: every part must hold), or "" without one."""
    parts = [
        f"{kind}:" + ":".join(ids)
        for kind, ids in (("afterok", request.after_ok), ("afternotok", request.after_not_ok))
        if ids
    ]
    return ",".join(parts)


def array_range(count: int, parallelism: int | None) -> str:
    """`0-N`, or `0-N%K` to let at most K tasks run at once."""
    return f"0-{count - 1}" + (f"%{parallelism}" if parallelism else "")


def render_sbatch_header(request: JobRequest, slurm: SlurmSettings) -> list[str]:
    """The `#SBATCH` lines: our options, the site's extra flags, then the stage's.

    One line per option: the stage's own extra flag replaces ours of the same option,
    and a site-wide flag is left out when the job already gives that option (a stage's
    `mem` wins over a site's `--mem=0`; `--mem-per-cpu` counts as `--mem`).
    """
    stage_flags = list(request.resources.extra_flags)
    stage_names = {flag_option(f) for f in stage_flags}
    options = [
        (o, v) for o, v in sbatch_options(request, slurm) if flag_option(o) not in stage_names
    ]
    given = stage_names | {flag_option(o) for o, _ in options}
    site_flags = [f for f in slurm.extra_flags if flag_option(f) not in given]
    lines = []
    for option, value in options:
        quoted = f"={sbatch_quote(value, option.lstrip('-'))}" if value else ""
        lines.append(f"#SBATCH {option}{quoted}")
    # Each extra flag is one argument, e.g. "--constraint=gpu" or "--exclusive".
    lines.extend(f"#SBATCH {sbatch_quote(flag, 'extra_flags')}" for flag in site_flags)
    lines.extend(f"#SBATCH {sbatch_quote(flag, 'resources.extra_flags')}" for flag in stage_flags)
    return lines


# sbatch's one-letter options, by the long name that the header uses.
_SHORT_OPTIONS = {
    "-A": "--account",
    "-C": "--constraint",
    "-G": "--gpus",
    "-N": "--nodes",
    "-c": "--cpus-per-task",
    "-p": "--partition",
    "-q": "--qos",
    "-t": "--time",
}
# Options sbatch refuses together count as one.
_SAME_OPTION = {"--mem-per-cpu": "--mem", "--mem-per-gpu": "--mem"}


def flag_option(flag: str) -> str:
    """The option an sbatch argument sets: "--mem=0" -> "--mem", "-pdev" -> "--partition"."""
    if flag.startswith("--"):
        name = flag.split("=", 1)[0]
    else:
        name = _SHORT_OPTIONS.get(flag[:2], flag[:2])
    return _SAME_OPTION.get(name, name)


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
