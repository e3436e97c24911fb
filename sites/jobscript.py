"""The scheduler-independent part of every job script: environment, working directory
and the per-task command. Pure functions; every user value is shell-quoted exactly once.

Each scheduler wraps this body in its own header (`#SBATCH` lines for SLURM) and sets
`HPCFLEET_ARRAY_INDEX` from its own array mechanism before the body runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from registry.site import DEFAULT_UMASK, Container
from sites.remote import link_tree_command
from sites.scheduler import JobRequest, TaskSpec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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


def container_prefix(container: Container | None) -> tuple[str, ...]:
    """argv prefix that runs a command inside the site's container image, if any."""
    if container is None:
        return ()
    return (container.runtime, "exec", *container.options, container.image)


def render_exports(env: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines, values quoted, names validated."""
    return [f"export {check_env_name(k)}={shlex.quote(str(v))}" for k, v in env.items()]


def render_task_command(task: TaskSpec, container: Sequence[str] = ()) -> str:
    """The command line of one task, optionally run inside a container runtime.

    `container` is the runtime's argv prefix, e.g. ("apptainer", "exec", "img.sif").
    """
    if task.script is not None:
        argv: tuple[str, ...] = ("bash", "-c", task.script)
    elif task.argv:
        argv = task.argv
    else:
        raise ValueError("a task needs an argv or a script")
    return shlex.join([*container, *argv])


def render_input_links(links: Sequence[tuple[str, str]]) -> list[str]:
    """Lines that make each input dir a tree of hard links to a needed stage's outputs
    (a copy across filesystems) as the job starts, once afterok says they are final."""
    return [
        f"{link_tree_command(source, destination)} >/dev/null || "
        f"{{ echo {shlex.quote(f'hpcfleet: cannot stage {source} as {destination}')} >&2; "
        "exit 1; }"
        for source, destination in links
    ]


def render_job_body(
    request: JobRequest,
    *,
    modules: Sequence[str] = (),
    container: Sequence[str] = (),
    umask: str = DEFAULT_UMASK,
) -> str:
    """The body shared by all schedulers: umask, modules, env, cd, and a `case` over tasks.

    The umask comes first so that whatever the job creates (outputs, checkpoints,
    metrics) is owner-only on a shared file system, unless the site chose another.
    """
    lines: list[str] = [f"umask {shlex.quote(umask)}"]
    if modules:
        lines.append("module load " + " ".join(shlex.quote(m) for m in modules))
    lines.extend(render_exports(request.env))
    lines.extend(render_input_links(request.link_inputs))
    lines.append(f"cd {shlex.quote(request.workdir)} || exit 1")
    lines.append('case "${HPCFLEET_ARRAY_INDEX:-0}" in')
    for index, task in enumerate(request.tasks):
        lines.append(f"  {index})")
        lines.extend(f"    {line}" for line in render_exports(task.env))
        lines.append(f"    {render_task_command(task, container)}")
        lines.append("    ;;")
    lines.append("  *)")
    lines.append(
        '    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; '
        f"exit {NO_SUCH_TASK_EXIT}"
    )
    lines.append("    ;;")
    lines.append("esac")
    return "\n".join(lines) + "\n"
