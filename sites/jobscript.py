"""The scheduler-independent part of every job script: environment, working directory
and the per-task command. Pure functions; every user value is shell-quoted exactly once.

Each scheduler wraps this body in its own header (`#SBATCH` lines for SLURM) and sets
`HPCFLEET_ARRAY_INDEX` from its own array mechanism before the body runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

from registry.site import Environment
from sites.launcher import launch_command, launch_prelude, plan_launch
from sites.remote import link_tree_command
from sites.scheduler import JobRequest

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What stays live inside a site's env value: $VAR and ${VAR} (registry.site checks the rest).
_EXPANSION = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
# environment.offline: compute nodes without internet.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
}
# `module` is a shell function a login shell's profile defines (Lmod: /etc/profile.d/
# lmod.sh; Environment Modules: .../init/bash). A batch script submitted over a
# non-login ssh exec has none, so source the first init found if it is missing.
MODULE_INIT = (
    "if ! type module >/dev/null 2>&1; then",
    "  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \\",
    "      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do",
    '    if [ -r "$init" ]; then . "$init"; break; fi',
    "  done",
    "fi",
)

HPCFLEET_PREFIX = "HPCFLEET_"  # names only hpcfleet sets (registry.site refuses them)
# Exit code of a job script asked to run an array index it has no task for.
NO_SUCH_TASK_EXIT = 97


def check_env_name(name: str) -> str:
    """Return `name` if it is a valid shell variable name; raise ValueError otherwise."""
    if not _ENV_NAME.match(name):
        raise ValueError(
            f"invalid environment variable name {name!r}: use letters, digits and _, "
            "not starting with a digit"
        )
    return name


def render_exports(env: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines, values quoted, names validated."""
    return [f"export {check_env_name(k)}={shlex.quote(str(v))}" for k, v in env.items()]


def expanding_quote(value: str) -> str:
    """`value` in double quotes where `$VAR` and `${VAR}` expand in the job and nothing
    else does: backslash, double quote, backtick and every other `$` are escaped."""
    kept = [m.span() for m in _EXPANSION.finditer(value)]
    out: list[str] = []
    position = 0
    for begin, end in kept:
        out.append(_escape_double_quoted(value[position:begin]))
        out.append(value[begin:end])
        position = end
    out.append(_escape_double_quoted(value[position:]))
    return '"' + "".join(out) + '"'


def _escape_double_quoted(text: str) -> str:
    for char in ("\\", '"', "`", "$"):
        text = text.replace(char, "\\" + char)
    return text


def render_site_exports(environment: Environment, overridden: Collection[str]) -> list[str]:
    """The site's variables ($VAR expanding), then the offline switches; names the job
    sets itself (`overridden`) are left to the job's own literal exports."""
    lines = [
        f"export {check_env_name(name)}={expanding_quote(value)}"
        for name, value in environment.env.items()
        if name not in overridden
    ]
    if environment.offline:
        skip = {*overridden, *environment.env}
        lines.extend(
            f"export {name}={value}" for name, value in OFFLINE_ENV.items() if name not in skip
        )
    return lines


def render_modules(environment: Environment) -> list[str]:
    """Make `module` exist, run the site's setup lines, load the site's modules."""
    if not environment.setup and not environment.modules:
        return []
    lines = list(MODULE_INIT)
    lines.extend(environment.setup)  # the site owner's own shell, trusted as written
    if environment.modules:
        lines.append("module load " + " ".join(shlex.quote(m) for m in environment.modules))
    return lines


def render_input_links(links: Sequence[tuple[str, str]]) -> list[str]:
    """Lines that make each input dir a tree of hard links to a needed stage's outputs
    (a copy across filesystems) as the job starts, once afterok says they are final."""
    return [
        f"{link_tree_command(source, destination)} >/dev/null || "
        f"{{ echo {shlex.quote(f'hpcfleet: cannot stage {source} as {destination}')} >&2; "
        "exit 1; }"
        for source, destination in links
    ]


def render_segment_guard(earlier_end_markers: Sequence[str]) -> list[str]:
    """Lines that end a chain's segment at once when an earlier segment's command
    returned by itself (completed or failed rather than hit its time limit): the
    scheduler may start this segment before hpcfleet can cancel it."""
    if not earlier_end_markers:
        return []
    return [
        f"for hpcfleet_ended in {' '.join(shlex.quote(m) for m in earlier_end_markers)}; do",
        '  if [ -e "$hpcfleet_ended" ]; then',
        '    echo "hpcfleet: an earlier segment ended (exit $(cat "$hpcfleet_ended")):'
        ' nothing to resume" >&2',
        "    exit 0",
        "  fi",
        "done",
    ]


def render_job_body(
    request: JobRequest,
    environment: Environment = Environment(),
    *,
    scheduler: Literal["slurm", "local"] = "local",
    srun_flags: Sequence[str] = (),
) -> str:
    """The body shared by all schedulers: umask, modules, env, input links, cd, and a
    `case` over tasks, each task's command fanned out by the launcher (sites.launcher).

    The umask comes first so that whatever the job creates (outputs, checkpoints,
    metrics) is owner-only on a shared file system, unless the site chose another.
    """
    launch = plan_launch(request, scheduler, environment, srun_flags)
    lines = [f"umask {shlex.quote(environment.effective_umask)}"]
    lines.extend(render_segment_guard(request.earlier_end_markers))
    lines.extend(render_modules(environment))
    # hpcfleet's own variables first, so that the site's values may refer to them; the
    # site's go after `module load` (a module must not undo them) and before the
    # stage's own, which win.
    ours = {k: v for k, v in request.env.items() if k.startswith(HPCFLEET_PREFIX)}
    lines.extend(render_exports(ours))
    lines.extend(render_site_exports(environment, request.env))
    lines.extend(render_exports({k: v for k, v in request.env.items() if k not in ours}))
    lines.extend(render_input_links(request.link_inputs))
    lines.extend(launch_prelude(launch))
    lines.append(f"cd {shlex.quote(request.workdir)} || exit 1")
    lines.append('case "${HPCFLEET_ARRAY_INDEX:-0}" in')
    for index, task in enumerate(request.tasks):
        lines.append(f"  {index})")
        lines.extend(f"    {line}" for line in render_exports(task.env))
        lines.append(f"    {launch_command(task, launch)}")
        lines.append("    ;;")
    lines.append("  *)")
    lines.append(
        '    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; '
        f"exit {NO_SUCH_TASK_EXIT}"
    )
    lines.append("    ;;")
    lines.append("esac")
    if request.end_marker:
        lines.append("hpcfleet_status=$?")
        lines.append(f"printf '%s\\n' \"$hpcfleet_status\" > {shlex.quote(request.end_marker)}")
        lines.append('exit "$hpcfleet_status"')
    return "\n".join(lines) + "\n"
