"""Login-node tasks (`where: login`): the shell that runs them and reads their state,
as pure `*_command()` / `parse_*()` pairs (see `sites.login.scheduler` for the client).

A login task is one process on the login node, started detached (`setsid`) by a small
POSIX-sh wrapper, so that it outlives the SSH connection that started it and the
orchestrator. Everything it knows is in files on the site, under `<workdir>/.hpcfleet-login/`:

    next                     hint for the next id
    slots/<k>                slot k of `policy.login_tasks`; `flock`ed while a task runs
    jobs/L<n>/name           the job name (one line)
    jobs/L<n>/script.sh      the job script (`sites.jobscript` body, bash)
    jobs/L<n>/run.sh         the wrapper (`render_wrapper`)
    jobs/L<n>/state          key=value lines (`LoginState`), replaced with `mv`
    jobs/L<n>/cancel         cancel marker; jobs/L<n>/timeout: the time limit was reached

The wrapper waits for a free slot, runs `bash script.sh` in its own session (a process
group it can stop as a whole), stops it at the time limit (SIGTERM, SIGKILL after a
grace) or when the cancel marker appears, kills what the script left behind (as SLURM
ends a job) and records the outcome. Needs `setsid` and `flock` (util-linux, present on
Linux login nodes).

Ids are "L<n>", so that they never meet a SLURM job id ("123") of the same site.
Every value placed in a command goes through `shlex.quote` exactly once, here; what
comes back is input and is checked before use.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.states import JobState

STATE_DIR_NAME = ".hpcfleet-login"
LOGIN_ID = re.compile(r"^L[1-9][0-9]{0,17}$")
# How long a stopped task may take to exit after SIGTERM before SIGKILL.
KILL_GRACE_SECONDS = 5
# A task whose wrapper has not recorded itself this long after submission never will.
RUNNER_START_GRACE_SECONDS = 60
# Exit code of the submit command when the job directory cannot be made.
_NO_JOB_DIR = 3
_RECORD = "@@ "
_TRAILER = "@@ site"
_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
}


class BadLoginOutput(ValueError):
    """The site answered something that is not what the command prints."""


def is_login_job_id(job_id: str) -> bool:
    return bool(LOGIN_ID.match(job_id))


def state_root(workdir: str) -> str:
    return f"{workdir.rstrip('/')}/{STATE_DIR_NAME}"


# --------------------------------------------------------------------------- wrapper


def render_wrapper(
    *,
    root: str,
    stdout: str,
    stderr: str,
    time_seconds: int,
    slots: int,
    grace_seconds: int = KILL_GRACE_SECONDS,
) -> str:
    """The POSIX-sh wrapper of one login task; run as `sh run.sh JOBDIR`."""
    if time_seconds < 1 or slots < 1 or grace_seconds < 0:
        raise ValueError("a login task needs a time limit, a slot and a grace of 0 s or more")
    q = shlex.quote
    return f"""#!/bin/sh
# hpcfleet login-node task: wait for a slot, run script.sh under a time limit.
job=$1
root={q(root)}
out={q(stdout)}
err={q(stderr)}
limit={int(time_seconds)}
slots={int(slots)}
grace={int(grace_seconds)}
host=$(hostname 2>/dev/null || uname -n)
state=PENDING; code=; started=; ended=; pgid=; reason='waiting for a login slot'
save() {{
  printf 'state=%s\\nexit=%s\\nstarted=%s\\nended=%s\\n' "$state" "$code" "$started" "$ended" \\
    >"$job/state.tmp" &&
  printf 'pgid=%s\\nhost=%s\\nrunner=%s\\nreason=%s\\n' "$pgid" "$host" "$$" "$reason" \\
    >>"$job/state.tmp" &&
    mv -f "$job/state.tmp" "$job/state"
}}
finish() {{ state=$1; reason=$2; ended=$(date +%s); save; }}
save
got=
while [ -z "$got" ]; do
  if [ -e "$job/cancel" ]; then finish CANCELLED 'cancelled while pending'; exit 0; fi
  k=0
  while [ "$k" -lt "$slots" ]; do
    exec 9>>"$root/slots/$k"
    if flock -n 9; then got=$k; break; fi
    exec 9>&-
    k=$((k + 1))
  done
  [ -n "$got" ] || sleep 1
done
started=$(date +%s)
setsid bash "$job/script.sh" </dev/null >"$out" 2>"$err" 9>&- &
pgid=$!
state=RUNNING; reason=; save
(
  deadline=$((started + limit))
  while sleep 1; do
    if [ -e "$job/cancel" ]; then :
    elif [ "$(date +%s)" -ge "$deadline" ]; then : >"$job/timeout"
    else continue; fi
    kill -TERM "-$pgid" 2>/dev/null
    sleep "$grace"
    kill -KILL "-$pgid" 2>/dev/null
    exit 0
  done
) 9>&- </dev/null >/dev/null 2>&1 &
dog=$!
wait "$pgid"
code=$?
if [ -e "$job/timeout" ] || [ -e "$job/cancel" ]; then
  # The group gets its grace to exit (a checkpoint's worth of time) after SIGTERM.
  waited=0
  while kill -0 "-$pgid" 2>/dev/null && [ "$waited" -le "$grace" ]; do
    sleep 1; waited=$((waited + 1))
  done
fi
kill "$dog" 2>/dev/null
# What the script left running ends with it, as SLURM ends a job.
kill -KILL "-$pgid" 2>/dev/null
if [ -e "$job/timeout" ]; then finish TIMEOUT "time limit of $limit s reached"
elif [ -e "$job/cancel" ]; then finish CANCELLED cancelled
elif [ "$code" -eq 0 ]; then finish COMPLETED ''
else finish FAILED "exit code $code"
fi
"""


# --------------------------------------------------------------------------- commands


def submit_command(
    *, root: str, name: str, wrapper: str, log_dir: str, workdir: str, umask: str
) -> str:
    """Make a job directory with the next free id, write the job script (read from
    stdin), the wrapper and the name into it, start the wrapper detached; print the id."""
    if "\n" in name or "\r" in name:
        raise ValueError("a job name is one line")
    q = shlex.quote
    jobs = q(root + "/jobs")
    return (
        f"umask {q(umask)} || exit 1; "
        "for tool in setsid flock; do command -v $tool >/dev/null 2>&1 || "
        '{ echo "$tool not found on the login node (util-linux)" >&2; exit 1; }; done; '
        f"mkdir -p -- {jobs} {q(root + '/slots')} {q(log_dir)} {q(workdir)} || exit 1; "
        f"cd -- {jobs} || exit 1; "
        "n=$(cat ../next 2>/dev/null); case $n in ''|*[!0-9]*) n=0;; esac; n=$((n + 1)); "
        f'while ! mkdir "L$n" 2>/dev/null; do [ -e "L$n" ] || exit {_NO_JOB_DIR}; '
        "n=$((n + 1)); done; "
        "printf '%s\\n' \"$n\" >../next; "
        'cat >"L$n/script.sh" || exit 1; '
        f"printf '%s\\n' {q(name)} >\"L$n/name\" || exit 1; "
        f'printf %s {q(wrapper)} >"L$n/run.sh" || exit 1; '
        "printf 'state=PENDING\\nsubmitted=%s\\nreason=starting\\n' \"$(date +%s)\" "
        '>"L$n/state" || exit 1; '
        # Its own session: it outlives this connection and whoever started it.
        '{ setsid sh "L$n/run.sh" "$PWD/L$n" </dev/null >/dev/null 2>&1 & } ; '
        "printf 'L%s\\n' \"$n\""
    )


def parse_submit(returncode: int, stdout: str, stderr: str) -> str:
    """The id the submit command printed; ValueError with the site's words otherwise."""
    job_id = stdout.strip()
    if returncode != 0 or not is_login_job_id(job_id):
        why = stderr.strip() or stdout.strip() or f"exit code {returncode}"
        raise BadLoginOutput(f"the login task was not started: {why[:500]}")
    return job_id


def _checked_ids(job_ids: Sequence[str]) -> list[str]:
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        if not is_login_job_id(job_id):
            raise ValueError(f"{job_id!r} is not a login task id (such as L7)")
    return ids


def status_command(root: str, job_ids: Sequence[str]) -> str:
    """For each id: a record line, whether its wrapper runs here (read BEFORE the
    state, so that a wrapper that just ended is seen with its final state), its name and
    state; then this login node's name and clock."""
    ids = " ".join(_checked_ids(job_ids))
    return (
        f"cd -- {shlex.quote(root + '/jobs')} 2>/dev/null || exit 0; "
        f"for id in {ids}; do "
        f"printf '{_RECORD}%s\\n' \"$id\"; "
        '[ -r "$id/state" ] || continue; '
        # Shell builtins where it is cheap: one poll may cover many tasks.
        "st=; r=; n=; a=0; "
        'while IFS== read -r k v; do case $k in state) st=$v;; runner) r=$v;; esac; '
        'done <"$id/state"; '
        # Alive: that pid is no zombie and still runs this very task's wrapper.
        'case "$st:$r" in PENDING:*[0-9]|RUNNING:*[0-9]) '
        'case "$r" in *[!0-9]*) ;; *) c=$(ps -ww -o stat= -o args= -p "$r" 2>/dev/null); '
        'case "$c" in Z*) ;; *"$PWD/$id") a=1;; esac;; esac;; esac; '
        'read -r n <"$id/name" 2>/dev/null; '
        'printf \'alive=%s\\nchecked=%s\\nname=%s\\n\' "$a" "$r" "$n"; '
        'cat "$id/state"; '
        "done; "
        f"printf '{_TRAILER}\\nhere=%s\\nnow=%s\\n' \"$(hostname 2>/dev/null || uname -n)\" "
        '"$(date +%s)"'
    )


def find_by_name_command(root: str, name: str) -> str:
    """The ids of the jobs with exactly this name, one a line."""
    return (
        f"cd -- {shlex.quote(root + '/jobs')} 2>/dev/null || exit 0; "
        f"grep -lxF -e {shlex.quote(name)} -- L*/name 2>/dev/null | sed 's,/name$,,'; true"
    )


def parse_found_ids(stdout: str) -> list[str]:
    return [line for line in stdout.split() if is_login_job_id(line)]


def cancel_command(root: str, job_ids: Sequence[str]) -> str:
    """Leave the cancel marker: the task's wrapper (on whichever login node it runs)
    stops it within a second, or leaves a pending one unstarted."""
    ids = " ".join(_checked_ids(job_ids))
    return (
        f"cd -- {shlex.quote(root + '/jobs')} 2>/dev/null || exit 0; "
        f'for id in {ids}; do [ -d "$id" ] && : >"$id/cancel"; done; true'
    )


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class LoginState:
    """What the site says about one login task."""

    job_id: str
    state: JobState
    name: str | None = None
    exit_code: int | None = None
    started: datetime | None = None
    ended: datetime | None = None
    submitted: datetime | None = None
    host: str | None = None
    reason: str | None = None
    runner_alive: bool = False
    has_runner: bool = False  # the recorded wrapper's liveness was checked


def _epoch(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    if not value.isdigit():
        raise BadLoginOutput(f"{field}: {value[:40]!r} is not a time in epoch seconds")
    return datetime.fromtimestamp(int(value), UTC)


def _int(value: str | None, field: str) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise BadLoginOutput(f"{field}: {value[:40]!r} is not a number")
    return int(value)


def _record(job_id: str, fields: dict[str, str]) -> LoginState:
    raw_state = fields.get("state", "")
    state = _STATES.get(raw_state)
    if state is None:
        raise BadLoginOutput(f"task {job_id}: unknown state {raw_state[:40]!r}")
    runner = fields.get("runner", "")
    # The state may have been replaced between the liveness check and its reading (the
    # wrapper's first write): liveness counts only for the runner that was checked.
    checked = bool(runner.isdigit() and fields.get("checked") == runner)
    return LoginState(
        job_id=job_id,
        state=state,
        name=fields.get("name") or None,
        exit_code=_int(fields.get("exit"), "exit"),
        started=_epoch(fields.get("started"), "started"),
        ended=_epoch(fields.get("ended"), "ended"),
        submitted=_epoch(fields.get("submitted"), "submitted"),
        host=fields.get("host") or None,
        reason=fields.get("reason") or None,
        runner_alive=fields.get("alive") == "1",
        has_runner=checked,
    )


def parse_status(
    stdout: str, asked: Sequence[str]
) -> tuple[dict[str, LoginState], str | None, datetime | None]:
    """The tasks the status command reported (only ids that were asked for; ids without
    a state file are absent), the login node it ran on and its clock."""
    wanted = set(asked)
    found: dict[str, dict[str, str]] = {}
    trailer: dict[str, str] = {}
    current: dict[str, str] | None = None
    for line in stdout.splitlines():
        if line == _TRAILER:
            current = trailer
        elif line.startswith(_RECORD):
            job_id = line[len(_RECORD) :]
            current = found.setdefault(job_id, {}) if job_id in wanted else None
        elif current is not None:
            key, sep, value = line.partition("=")
            if sep:
                current.setdefault(key, value)  # the first word on a key stands
    states = {job_id: _record(job_id, f) for job_id, f in found.items() if "state" in f}
    now = _epoch(trailer.get("now"), "now")
    return states, trailer.get("here") or None, now


def settle(task: LoginState, here: str | None, now: datetime | None) -> tuple[JobState, str | None]:
    """The task's real state: as recorded, unless its wrapper is gone without finishing.

    Liveness is only known on the login node the wrapper runs on: elsewhere (round-robin
    login nodes) the recorded state stands.
    """
    if task.state.is_final:
        return task.state, task.reason
    if not task.has_runner:
        if (
            task.submitted
            and now
            and (now - task.submitted).total_seconds() > (RUNNER_START_GRACE_SECONDS)
        ):
            return JobState.NODE_FAIL, "login runner never started"
        return task.state, task.reason
    if task.host is not None and here is not None and task.host != here:
        return task.state, f"{task.reason or task.state.lower()} (on login node {task.host})"
    if task.runner_alive:
        return task.state, task.reason
    return JobState.NODE_FAIL, "login runner vanished"
