"""Reading SLURM's output: job states, `sacct`/`squeue`/`sbatch` output, probes. Pure.

Every function here takes text a SLURM command printed and returns plain values; the
commands that print it are built in `sites.slurm`, next to the fields they ask for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.common import parse_walltime
from registry.states import JobState
from sites.scheduler import JobStatus

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

_EMPTY = {"", "Unknown", "None", "N/A", "(null)", "None assigned"}


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


def parse_exit_code(text: str) -> tuple[int | None, int]:
    """sacct's "EXIT:SIGNAL" -> (exit code, signal); a job killed by signal N reports
    128+N as its exit code, as a shell would."""
    code, _, signal = text.strip().partition(":")
    if not code.isdigit():
        return None, 0
    sig = int(signal) if signal.isdigit() else 0
    return (128 + sig if sig else int(code)), sig


def parse_gpu_count(tres: str) -> int:
    """GPUs in a TRES string such as "billing=2,cpu=2,gres/gpu=2,mem=1000M,node=1".

    The untyped `gres/gpu=N` is the total; typed entries (`gres/gpu:a100=N`) are summed
    only when the total is missing.
    """
    total: int | None = None
    typed = 0
    for item in tres.split(","):
        key, _, value = item.partition("=")
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


def _node(text: str) -> str | None:
    text = text.strip()
    return None if text in _EMPTY else text


def _reason(state_text: str, reason: str) -> str:
    reason = reason.strip()
    return f"{state_text} ({reason})" if reason and reason not in _EMPTY else state_text


# -- job ids and arrays ------------------------------------------------------------------

_ARRAY_RANGE = re.compile(r"^(?P<base>\d+)_\[(?P<spec>[^\]]*)\]$")


def expand_task_ids(job_id: str) -> list[str]:
    """ "123_[0-2,5%2]" -> ["123_0", "123_1", "123_2", "123_5"]; other ids unchanged.

    sacct and squeue show the not-yet-started tasks of an array as one such row.
    """
    match = _ARRAY_RANGE.match(job_id.strip())
    if not match:
        return [job_id.strip()]
    base, spec = match.group("base"), match.group("spec").split("%", 1)[0]
    ids: list[str] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            log.warning("unreadable array range %r in %r", part, job_id)
            continue
        # "0-9:2" steps are not printed by sacct/squeue, which list indices explicitly.
        ids.extend(f"{base}_{i}" for i in range(int(first), int(last or first) + 1))
    return ids


def base_job_id(job_id: str) -> str:
    """ "123_4" -> "123"; "123" -> "123"."""
    return job_id.split("_", 1)[0]


# -- sacct --------------------------------------------------------------------------------

# Order of the fields our sacct calls ask for. JobName comes last: it is the only
# free-text field, so a "|" in it cannot shift the others.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "State",
    "ExitCode",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
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
    """`sacct --parsable2 --noheader --format=<SACCT_FIELDS>` -> status per task id.

    Job steps ("123.batch") are skipped; a pending array range row becomes one PENDING
    entry per task. GPU-hours = allocated GPUs × elapsed hours.
    """
    result: dict[str, JobStatus] = {}
    for row in _rows(stdout, len(SACCT_FIELDS)):
        job_id, state, exit_code, start, end, elapsed, tres, nodes, reason, name = row
        if "." in job_id:
            continue
        seconds = parse_seconds(elapsed)
        gpus = parse_gpu_count(tres)
        for task_id in expand_task_ids(job_id):
            result[task_id] = JobStatus(
                job_id=task_id,
                state=job_state(state),
                exit_code=parse_exit_code(exit_code)[0],
                name=name,
                started=parse_time(start),
                ended=parse_time(end),
                elapsed_seconds=seconds,
                gpu_hours=gpus * (seconds or 0.0) / 3600.0,
                node=_node(nodes),
                reason=_reason(state, reason),
            )
    return result


def accounting_disabled(stderr: str) -> bool:
    """True when sacct refuses because the site runs without slurmdbd."""
    return "accounting storage is disabled" in stderr.lower()


# -- squeue (sites without accounting) -----------------------------------------------------

# squeue --Format fields of our squeue calls (`sites.slurm` adds the delimiter as each
# field's suffix). Name is last, as in SACCT_FIELDS.
SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",  # the array's base id; the job id for a plain job
    "ArrayTaskID",  # the task index; "N/A" for a plain job
    "State",
    "exit_code",
    "StartTime",
    "EndTime",
    "TimeUsed",
    "tres-alloc",
    "NodeList",
    "Reason",
    "Name",
)


def parse_squeue(stdout: str, delimiter: str = "|") -> dict[str, JobStatus]:
    """squeue rows in SQUEUE_FIELDS order -> status per task id."""
    result: dict[str, JobStatus] = {}
    for row in _rows(stdout, len(SQUEUE_FIELDS), delimiter):
        fields = [f.strip() for f in row[:-1]] + [row[-1].rstrip()]
        base, task, state, exit_code, start, end, used, tres, nodes, reason, name = fields
        if task in _EMPTY:
            task_ids = [base]
        elif task.isdigit():
            task_ids = [f"{base}_{task}"]
        else:
            task_ids = expand_task_ids(f"{base}_[{task.strip('[]')}]")
        seconds = _parse_elapsed(used)
        gpus = parse_gpu_count(tres)
        ours = job_state(state)
        # squeue shows *expected* start and end times for jobs that have not got there.
        started = parse_time(start) if ours not in (JobState.PENDING, JobState.UNKNOWN) else None
        ended = parse_time(end) if ours.is_final else None
        for task_id in task_ids:
            result[task_id] = JobStatus(
                job_id=task_id,
                state=ours,
                exit_code=parse_exit_code(exit_code)[0],
                name=name,
                started=started,
                ended=ended,
                elapsed_seconds=seconds,
                gpu_hours=gpus * (seconds or 0.0) / 3600.0,
                node=_node(nodes),
                reason=_reason(state, reason),
            )
    return result


def _parse_elapsed(text: str) -> float | None:
    """squeue's TimeUsed ("1:02", "1:02:03", "1-01:02:03") -> seconds."""
    text = text.strip()
    if text in _EMPTY or text in ("0:00", "INVALID"):
        return 0.0 if text == "0:00" else None
    try:
        if ":" in text and text.count(":") == 1 and "-" not in text:
            minutes, seconds = text.split(":")
            return float(int(minutes) * 60 + int(seconds))
        return float(parse_walltime(text))
    except ValueError:
        return None


# -- sbatch --------------------------------------------------------------------------------


def parse_submit(stdout: str) -> str:
    """`sbatch --parsable` output ("123" or "123;cluster") -> the job id."""
    for line in reversed(stdout.strip().splitlines()):
        job_id = line.strip().split(";", 1)[0]
        if job_id.isdigit():
            return job_id
    raise ValueError(f"sbatch printed no job id: {stdout.strip()!r}")


# -- probes for `site check` ---------------------------------------------------------------

_VERSION = re.compile(r"slurm(?:-wlm)?\s+(\d+(?:\.\d+)+\S*)", re.IGNORECASE)


def parse_versions(stdout: str) -> dict[str, str | None]:
    """Lines "TOOL slurm 22.05.8" or "TOOL missing" -> {tool: version or None}."""
    versions: dict[str, str | None] = {}
    for line in stdout.splitlines():
        tool, _, rest = line.strip().partition(" ")
        if not tool:
            continue
        match = _VERSION.search(rest)
        versions[tool] = match.group(1) if match else None
    return versions


@dataclass(frozen=True)
class PartitionInfo:
    """A partition as `sinfo` describes it."""

    name: str
    available: bool
    default: bool
    max_time_seconds: int | None  # None: no limit
    gpus_per_node: int
    gpu_types: tuple[str, ...]


SINFO_FORMAT = "%P|%a|%l|%G"


def parse_gres_gpus(gres: str) -> tuple[int, tuple[str, ...]]:
    """sinfo's GRES column ("gpu:a100:4(S:0-1),shard:8" or "(null)") -> (GPUs, types)."""
    count, types = 0, []
    for item in re.split(r",(?![^()]*\))", gres):
        parts = item.split("(", 1)[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        number = parts[-1]
        if number.isdigit():
            count += int(number)
        if len(parts) == 3:
            types.append(parts[1])
    return count, tuple(types)


def parse_sinfo(stdout: str) -> dict[str, PartitionInfo]:
    """`sinfo --noheader --format=SINFO_FORMAT` -> partitions by name.

    sinfo prints one line per group of alike nodes; a partition's GPUs per node is the
    largest count among its groups.
    """
    partitions: dict[str, PartitionInfo] = {}
    for row in _rows(stdout, 4):
        raw_name, avail, limit, gres = (f.strip() for f in row)
        name = raw_name.rstrip("*")
        gpus, types = parse_gres_gpus(gres)
        previous = partitions.get(name)
        if previous is not None:
            gpus = max(gpus, previous.gpus_per_node)
            types = tuple(dict.fromkeys(previous.gpu_types + types))
        partitions[name] = PartitionInfo(
            name=name,
            available=avail == "up",
            default=raw_name.endswith("*"),
            max_time_seconds=_parse_limit(limit),
            gpus_per_node=gpus,
            gpu_types=types,
        )
    return partitions


def _parse_limit(text: str) -> int | None:
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    try:
        return parse_walltime(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Association:
    """One row of `sacctmgr show assoc`: the user may submit under this account."""

    account: str
    partition: str | None
    qos: tuple[str, ...]


def parse_associations(stdout: str) -> list[Association]:
    """`sacctmgr --noheader --parsable2 show assoc format=Account,Partition,QOS`."""
    associations = []
    for account, partition, qos in _rows(stdout, 3):
        associations.append(
            Association(
                account=account.strip(),
                partition=partition.strip() or None,
                qos=tuple(q for q in qos.strip().split(",") if q),
            )
        )
    return associations


def known_job_ids(job_ids: Sequence[str], statuses: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """Keep the statuses that answer `job_ids` (a base id covers all of its tasks)."""
    wanted = set(job_ids)
    return {
        task_id: status
        for task_id, status in statuses.items()
        if task_id in wanted or base_job_id(task_id) in wanted
    }
