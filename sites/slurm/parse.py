"""Reading SLURM's output: job states and what `sacct`, `squeue` and `sbatch` print. Pure.

Every function here takes text a SLURM command printed and returns plain values; the
commands that print it are built in `sites.slurm.scheduler`, next to the fields they ask for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

from registry.states import JobState
from sites.scheduler import JobStatus
from sites.slurm.limits import never_starts

log = logging.getLogger(__name__)

# Every job state SLURM prints (sacct(1), squeue(1) "JOB STATE CODES", and the flag
# names of slurm.h's job_state_string), mapped onto ours. Final in SLURM <=> final here,
# except where a comment says otherwise.
SLURM_STATES: dict[str, JobState] = {
    # -- waiting --------------------------------------------------------------------
    "PENDING": JobState.PENDING,  # PD: waiting for resources, priority or dependency
    "CONFIGURING": JobState.PENDING,  # CF: allocated, nodes still booting; script not started
    "POWER_UP_NODE": JobState.PENDING,  # flag: waiting for powered-down nodes to boot
    "REQUEUED": JobState.PENDING,  # RQ: requeued; it runs again under the same id
    "REQUEUE_FED": JobState.PENDING,  # RF: requeued by a federation
    "REQUEUE_HOLD": JobState.PENDING,  # RH: requeued and held; the Reason says why
    "RESV_DEL_HOLD": JobState.PENDING,  # RD: held because its reservation was deleted
    # -- holding an allocation --------------------------------------------------------
    "RUNNING": JobState.RUNNING,  # R
    "COMPLETING": JobState.RUNNING,  # CG: ended, epilog/cleanup still running; not final yet
    "RESIZING": JobState.RUNNING,  # RS: the allocation is changing size
    "SUSPENDED": JobState.RUNNING,  # S: suspended by an admin or gang scheduling; resumes
    "STOPPED": JobState.RUNNING,  # ST: SIGSTOPed, keeps its allocation
    "SIGNALING": JobState.RUNNING,  # SI: a signal is being delivered
    "STAGE_OUT": JobState.RUNNING,  # SO: burst-buffer stage-out after the script ended
    # -- final ------------------------------------------------------------------------
    "COMPLETED": JobState.COMPLETED,  # CD: every process exited 0
    "FAILED": JobState.FAILED,  # F: non-zero exit code or other failure
    "SPECIAL_EXIT": JobState.FAILED,  # SE: requeued and held with a special exit value
    "DEADLINE": JobState.FAILED,  # DL: could not finish before its --deadline
    "CANCELLED": JobState.CANCELLED,  # CA: scancel'ed (sacct prints "CANCELLED by UID")
    "REVOKED": JobState.CANCELLED,  # RV: federation: a sibling ran it on another cluster
    "TIMEOUT": JobState.TIMEOUT,  # TO: reached its time limit
    "PREEMPTED": JobState.PREEMPTED,  # PR: preempted by a higher-priority job
    "NODE_FAIL": JobState.NODE_FAIL,  # NF: one of its nodes failed
    "BOOT_FAIL": JobState.NODE_FAIL,  # BF: its nodes failed to boot; nothing of it ran
    "LAUNCH_FAILED": JobState.NODE_FAIL,  # flag: the batch step could not be launched
    "RECONFIG_FAIL": JobState.NODE_FAIL,  # flag: node reconfiguration for it failed
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,  # OOM: exceeded its memory limit
}

_warned_states: set[str] = set()


def job_state(slurm_state: str) -> JobState:
    """Our state for a SLURM state text such as "RUNNING" or "CANCELLED by 1000".

    An unknown state is logged once and mapped to UNKNOWN, so polling simply goes on.
    """
    word = slurm_state.strip().split(" ", 1)[0].rstrip("+").upper()
    state = SLURM_STATES.get(word)
    if state is None:
        if word not in _warned_states:
            _warned_states.add(word)
            log.warning("unknown SLURM job state %r; treating it as UNKNOWN", slurm_state)
        return JobState.UNKNOWN
    return state


# -- small fields ----------------------------------------------------------------------

_EMPTY = {"", "Unknown", "None", "NONE", "N/A", "(null)", "None assigned"}


def parse_time(text: str) -> datetime | None:
    """A SLURM time field -> an aware datetime, or None when SLURM has none.

    Our commands ask for epoch seconds (`SLURM_TIME_FORMAT=%s`); the default ISO form
    ("2024-05-01T12:00:00", the cluster's local time) is read as local time here.
    """
    text = text.strip()
    if text in _EMPTY:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text), tz=UTC)
    try:
        return datetime.fromisoformat(text).astimezone()
    except ValueError:
        log.warning("unreadable SLURM time %r", text)
        return None


def _exit_code(code: int, signal: int) -> int:
    # A job killed by signal N reports 128+N, as a shell would.
    return 128 + signal if signal else code


def parse_exit_code(text: str) -> int | None:
    """sacct's ExitCode "CODE:SIGNAL" ("3:0", "0:9") -> 3, 137."""
    code, _, signal = text.strip().partition(":")
    if not code.isdigit():
        return None
    return _exit_code(int(code), int(signal) if signal.isdigit() else 0)


def parse_wait_status(text: str) -> int | None:
    """squeue's exit_code: a raw wait(2) status before SLURM 23.02 ("768" = exit 3,
    "9" = signal 9), "CODE:SIGNAL" since ("3:0", "0:9")."""
    text = text.strip()
    if ":" in text:
        return parse_exit_code(text)
    if not text.isdigit():
        return None
    status = int(text)
    return _exit_code((status >> 8) & 0xFF, status & 0x7F)


def parse_gpu_count(tres: str) -> int:
    """GPUs in a TRES string such as "billing=2,cpu=2,gres/gpu=2,mem=1000M,node=1".

    The untyped `gres/gpu=N` is the total; typed entries (`gres/gpu:a100=N`) are summed
    only when the total is missing.
    """
    total: int | None = None
    typed = 0
    for item in tres.split(","):
        key, _, value = item.strip().partition("=")
        if not value.isdigit():
            continue
        if key == "gres/gpu":
            total = int(value)
        elif key.startswith("gres/gpu:"):
            typed += int(value)
    return total if total is not None else typed


def parse_seconds(text: str) -> float | None:
    text = text.strip()
    return float(text) if text.isdigit() else None


def parse_elapsed(text: str) -> float | None:
    """squeue's TimeUsed ("0:04", "1:02:03", "1-01:02:03") -> seconds."""
    text = text.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _node(text: str) -> str | None:
    text = text.strip()
    return None if text in _EMPTY else text


def _reason(state_text: str, state: JobState, reason: str) -> str:
    """SLURM's state text, plus its Reason while that still means something (SLURM
    leaves stale reasons such as JobArrayTaskLimit on completed tasks)."""
    reason = reason.strip()
    if state is JobState.COMPLETED or reason in _EMPTY:
        return state_text
    return f"{state_text} ({reason})"


def same_job_name(a: str, b: str) -> bool:
    """Names equal as slurmdbd stores them: it turns '"' into '`' (sacct shows that)."""
    return a.replace('"', "`") == b.replace('"', "`")


# -- job ids and arrays ------------------------------------------------------------------

_ARRAY_RANGE = re.compile(r"^(?P<base>\d+)_\[(?P<spec>[^\]]*)\]$")
_INDEX_RANGE = re.compile(r"^(?P<first>\d+)(?:-(?P<last>\d+)(?::(?P<step>\d+))?)?$")


def expand_task_ids(job_id: str) -> list[str]:
    """Expand "123_[0-2,5%2]" into "123_0", "123_1", "123_2", "123_5", and a strided
    "123_[1-9:4]" into "123_1", "123_5", "123_9".

    sacct and squeue show the not-yet-started tasks of an array as one such row (the
    "%2" is the array's throttle). Other ids come back unchanged.
    """
    match = _ARRAY_RANGE.match(job_id.strip())
    if not match:
        return [job_id.strip()]
    base, spec = match.group("base"), match.group("spec").split("%", 1)[0]
    ids: list[str] = []
    for part in spec.split(","):
        index_range = _INDEX_RANGE.match(part.strip())
        if not index_range or index_range.group("step") == "0":
            log.warning("unreadable array range %r in %r", part, job_id)
            continue
        first = int(index_range.group("first"))
        last = int(index_range.group("last") or first)
        step = int(index_range.group("step") or 1)
        ids.extend(f"{base}_{i}" for i in range(first, last + 1, step))
    return ids


def base_job_id(job_id: str) -> str:
    """The array's id for a task id ("123_4" -> "123"); other ids unchanged."""
    return job_id.split("_", 1)[0]


def select_jobs(job_ids: Iterable[str], statuses: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """The statuses that answer `job_ids` (an array's id covers all of its tasks)."""
    wanted = set(job_ids)
    return {
        task_id: status
        for task_id, status in statuses.items()
        if task_id in wanted or base_job_id(task_id) in wanted
    }


def settled_ids(job_ids: Iterable[str], statuses: dict[str, JobStatus]) -> set[str]:
    """The ids among `job_ids` that `statuses` answers with final states only."""
    by_id: dict[str, list[JobStatus]] = {}
    for task_id, status in statuses.items():
        for key in {task_id, base_job_id(task_id)}:
            by_id.setdefault(key, []).append(status)
    return {
        job_id
        for job_id in job_ids
        if by_id.get(job_id) and all(s.state.is_final for s in by_id[job_id])
    }


def placeholder_ids(
    job_ids: Iterable[str], recorded: dict[str, JobStatus], live: dict[str, JobStatus]
) -> set[str]:
    """The ids among `job_ids` whose sacct rows are still slurmdbd's placeholders.

    For a second or two after a job ends, sacct can show it as one row named
    "allocation", final, with an array not yet split into its tasks (seen on 22.05).
    squeue, live, still knows the job then: where it names other tasks or another job
    name than sacct does, sacct has not caught up.
    """
    recorded_by_id, live_by_id = _tasks_by_id(recorded), _tasks_by_id(live)
    stale: set[str] = set()
    for job_id in job_ids:
        now = live_by_id.get(job_id)
        if not now:
            continue
        then = recorded_by_id.get(job_id, {})
        if then.keys() != now.keys() or any(
            not same_job_name(then[task].name or "", now[task].name or "") for task in now
        ):
            stale.add(job_id)
    return stale


def _tasks_by_id(statuses: dict[str, JobStatus]) -> dict[str, dict[str, JobStatus]]:
    """Statuses under their own task id and under their array's id."""
    index: dict[str, dict[str, JobStatus]] = {}
    for task_id, status in statuses.items():
        for key in {task_id, base_job_id(task_id)}:
            index.setdefault(key, {})[task_id] = status
    return index


# -- sacct --------------------------------------------------------------------------------

# The fields our sacct calls ask for, in order. JobName comes last: it is the only
# free-text field, so a "|" in a name cannot shift the others.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",  # "123", "123_4", or "123_[5-9%2]" for an array's not-yet-started tasks
    "State",  # "COMPLETED", "CANCELLED by 1000", ...
    "ExitCode",  # "CODE:SIGNAL"
    "Start",
    "End",
    "ElapsedRaw",  # seconds
    "AllocTRES",  # "billing=1,cpu=1,gres/gpu=1,node=1"
    "NodeList",
    "Reason",
    "JobName",
)


def _rows(stdout: str, n_fields: int, delimiter: str = "|") -> Iterator[list[str]]:
    for line in stdout.splitlines():
        if not line.strip():
            continue
        row = line.split(delimiter, n_fields - 1)
        if len(row) != n_fields:
            log.warning("skipping a SLURM output line with %d fields: %r", len(row), line)
            continue
        yield row


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """`sacct --noheader --parsable2 --format=<SACCT_FIELDS>` -> status per task id.

    A pending array range row becomes one PENDING entry per task. GPU-hours = allocated
    GPUs × elapsed hours. Job steps ("123.batch", "123.0") only count for one thing: a
    FAILED job with a step that ran out of memory is OUT_OF_MEMORY (how an OOM under
    `srun` looks on most sites: the step is OUT_OF_MEMORY, the allocation FAILED).
    """
    result: dict[str, JobStatus] = {}
    oom_steps: dict[str, list[str]] = {}
    for row in _rows(stdout, len(SACCT_FIELDS)):
        job_id, state_text, exit_code, start, end, elapsed, tres, nodes, reason, name = row
        if "." in job_id:
            parent, _, step = job_id.partition(".")
            if job_state(state_text) is JobState.OUT_OF_MEMORY:
                oom_steps.setdefault(parent, []).append(step)
            continue
        state = job_state(state_text)
        seconds = parse_seconds(elapsed)
        gpu_hours = parse_gpu_count(tres) * (seconds or 0.0) / 3600.0
        for task_id in expand_task_ids(job_id):
            result[task_id] = JobStatus(
                job_id=task_id,
                state=state,
                exit_code=parse_exit_code(exit_code),
                name=name,
                started=parse_time(start),
                ended=parse_time(end),
                elapsed_seconds=seconds,
                gpu_hours=gpu_hours,
                node=_node(nodes),
                reason=_reason(state_text, state, reason),
                never_starts=never_starts(reason) if state is JobState.PENDING else None,
            )
    return _with_oom_steps(result, oom_steps)


def _with_oom_steps(
    statuses: dict[str, JobStatus], oom_steps: dict[str, list[str]]
) -> dict[str, JobStatus]:
    for job_id, steps in oom_steps.items():
        status = statuses.get(job_id)
        if status is not None and status.state is JobState.FAILED:
            reason = f"{status.reason} (step {', '.join(steps)} OUT_OF_MEMORY)"
            statuses[job_id] = replace(status, state=JobState.OUT_OF_MEMORY, reason=reason)
    return statuses


def accounting_disabled(output: str) -> bool:
    """True when sacct refuses because the site runs without slurmdbd."""
    return "accounting storage is disabled" in output.lower()


# -- squeue ---------------------------------------------------------------------------------

# The `squeue --Format` fields of our squeue calls, in order (`sites.slurm.scheduler` appends the
# delimiter to each as its suffix). Name comes last, as in SACCT_FIELDS.
SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",  # "123" for a plain job, "123_4" for an array task
    "ArrayTaskID",  # "4", or "N/A" for a plain job
    "State",
    "exit_code",  # a raw wait status: 768 = exit 3
    "StartTime",  # expected start while pending
    "EndTime",  # expected end while running
    "TimeUsed",
    "tres-alloc",  # allocated TRES while running, else requested
    "NodeList",
    "Reason",
    "Name",
)


def _squeue_task_ids(job_id: str, task: str) -> list[str]:
    if "_" in job_id:
        return expand_task_ids(job_id)
    if task.isdigit():
        return [f"{job_id}_{task}"]
    if task in _EMPTY:
        return [job_id]
    return expand_task_ids(f"{job_id}_[{task.strip('[]')}]")


def parse_squeue(stdout: str, delimiter: str = "|") -> dict[str, JobStatus]:
    """squeue rows in SQUEUE_FIELDS order -> status per task id."""
    result: dict[str, JobStatus] = {}
    for row in _rows(stdout, len(SQUEUE_FIELDS), delimiter):
        fields = [f.strip() for f in row[:-1]] + [row[-1].rstrip("\n")]
        job_id, task, state_text, status, start, end, used, tres, nodes, reason, name = fields
        state = job_state(state_text)
        seconds = parse_elapsed(used)
        gpu_hours = parse_gpu_count(tres) * (seconds or 0.0) / 3600.0
        # Start and end times are only expected ones until the job gets there.
        started = None if state in (JobState.PENDING, JobState.UNKNOWN) else parse_time(start)
        ended = parse_time(end) if state.is_final else None
        for task_id in _squeue_task_ids(job_id, task):
            result[task_id] = JobStatus(
                job_id=task_id,
                state=state,
                exit_code=parse_wait_status(status),
                name=name,
                started=started,
                ended=ended,
                elapsed_seconds=seconds,
                gpu_hours=gpu_hours,
                node=_node(nodes),
                reason=_reason(state_text, state, reason),
                never_starts=never_starts(reason) if state is JobState.PENDING else None,
            )
    return result


# -- sbatch --------------------------------------------------------------------------------


def parse_submit(stdout: str) -> str:
    """`sbatch --parsable` output ("123" or "123;cluster") -> the job id."""
    for line in reversed(stdout.strip().splitlines()):
        job_id = line.strip().split(";", 1)[0]
        if job_id.isdigit():
            return job_id
    raise ValueError(f"sbatch printed no job id: {stdout.strip()!r}")
