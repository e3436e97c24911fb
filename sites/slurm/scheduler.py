"""SLURM: command builders (pure), and `SlurmScheduler`, a thin client over a Transport.

Layout (after PSI/J's batch executors and AiiDA's SLURM plugin):

- `sites.slurm.script`: `render_sbatch`, the batch script;
- `sites.slurm.parse`: `SLURM_STATES` and the parsers of SLURM's output;
- here: one `*_command()` per operation, the translation of SLURM's error messages
  into `SchedulerError`, and `SlurmScheduler`, whose methods run a built command
  through the transport and hand its output to the matching parser.

Where status comes from: `sacct` (slurmdbd) knows every job, also long after it ended,
but lags slurmctld by a few seconds; right after sbatch a job can be missing there or
still carry a placeholder row. So `status()` makes ONE sacct call for all jobs and, only
when some of them are not final in it, ONE squeue call (slurmctld, live) for those.
Just after a job ends, sacct can show a final placeholder row (named "allocation", an
array not yet split into tasks); where squeue still knows the job, it wins then too.
Sites without accounting (`sacct` says "accounting storage is disabled") use squeue
alone, which forgets a job MinJobAge (300 s by default) after it ended.

Every value placed in a command goes through `shlex.quote` exactly once, here.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable, Sequence

from registry.site import DEFAULT_UMASK, Environment, SlurmSettings
from sites.checkpoints import split_listing, with_listing
from sites.errors import SchedulerError, SubmitLimitReached
from sites.scheduler import JobRequest, JobStatus
from sites.slurm.limits import submit_limit
from sites.slurm.parse import (
    SACCT_FIELDS,
    SLURM_STATES,
    SQUEUE_FIELDS,
    accounting_disabled,
    base_job_id,
    parse_sacct,
    parse_squeue,
    parse_submit,
    placeholder_ids,
    same_job_name,
    select_jobs,
    settled_ids,
)
from sites.slurm.probes import (
    Association,
    PartitionInfo,
    account_check_command,
    parse_associations,
    parse_sinfo,
    parse_versions,
    partitions_command,
    versions_command,
)
from sites.slurm.script import render_sbatch
from sites.transport import CommandResult, Transport

__all__ = [
    "SLURM_STATES",
    "SlurmScheduler",
    "account_check_command",
    "cancel_command",
    "exclude_nodes_command",
    "find_by_name_command",
    "partitions_command",
    "render_sbatch",
    "scheduler_error",
    "squeue_find_by_name_command",
    "squeue_status_command",
    "status_command",
    "submit_command",
    "tail_command",
    "versions_command",
]

log = logging.getLogger(__name__)

# Epoch seconds in every time field (no guessing at the cluster's time zone), and
# array index lists never cut short (SLURM's default limit is 64 characters).
_ENV = "SLURM_TIME_FORMAT=%s SLURM_BITSTR_LEN=0"
# Job steps too (no --allocations): an OOM under srun shows only on its step.
_SACCT = f"{_ENV} sacct --noheader --parsable2"
_SACCT_FORMAT = "--format=" + ",".join(SACCT_FIELDS)
# How far back find_by_name looks. sacct rejects "now-10min": units are spelled out.
FIND_WINDOW = "now-30days"
SQUEUE_DELIMITER = "|"
# Each field gets the delimiter as its suffix ("Field:|" = no width, suffix "|"),
# except the last, the free-text job name.
_SQUEUE_FORMAT = "--Format=" + ",".join(
    [f"{field}:{SQUEUE_DELIMITER}" for field in SQUEUE_FIELDS[:-1]] + [f"{SQUEUE_FIELDS[-1]}:"]
)
_SQUEUE = f"{_ENV} squeue --noheader --array --states=all {shlex.quote(_SQUEUE_FORMAT)}"
_JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+)?")


# -- commands (pure) ------------------------------------------------------------------------


def _job_list(job_ids: Iterable[str]) -> str:
    """Validated, comma-separated ids: only digits and "_" reach the command line."""
    ids = list(job_ids)
    if not ids:
        raise ValueError("no job ids given")
    for job_id in ids:
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"{job_id!r} is not a SLURM job id (such as 123 or 123_4)")
    return ",".join(ids)


def submit_command(request: JobRequest, umask: str = DEFAULT_UMASK) -> str:
    """Create the job's log and work directories, then `sbatch --parsable` the script
    read from stdin. (sbatch creates neither; the job would then fail unseen.)

    Under `umask`: the directories, and the output files slurmstepd creates (sbatch
    passes its umask on to the job as SLURM_UMASK), are owner-only by default.
    """
    dirs = shlex.join(["mkdir", "-p", "--", request.log_dir, request.workdir])
    return f"umask {shlex.quote(umask)} && {dirs} && sbatch --parsable"


def status_command(job_ids: Iterable[str]) -> str:
    """ONE sacct call for all jobs, their steps included (`parse_sacct` reads them)."""
    return f"{_SACCT} --jobs={_job_list(job_ids)} {_SACCT_FORMAT}"


PAIR_MARK = "@@hpcfleet-squeue-follows@@ sacct exit status:"


def status_pair_command(job_ids: Iterable[str]) -> str:
    """sacct and squeue for the same jobs in ONE command (one round trip per poll).

    sacct's exit status is printed on a marker line between the two outputs; the
    command's own exit status is squeue's. `split_pair` takes the answer apart.
    """
    ids = list(job_ids)
    return (
        f"{status_command(ids)}; printf '\\n%s %s\\n' {shlex.quote(PAIR_MARK)} \"$?\"; "
        f"{squeue_status_command(ids)}"
    )


def split_pair(result: CommandResult) -> tuple[CommandResult, CommandResult]:
    """(sacct's result, squeue's result) from a `status_pair_command` answer. Both share
    the command's stderr: the error classifiers only look for their own messages."""
    head, found, tail = result.stdout.partition(f"\n{PAIR_MARK} ")
    rc_text, _, squeue_out = tail.partition("\n")
    if not found or not rc_text.strip().isdigit():
        # The command was cut short before sacct finished: treat it as sacct failing.
        return (
            CommandResult(result.command, result.returncode or 1, result.stdout, result.stderr),
            CommandResult(result.command, 1, "", result.stderr),
        )
    sacct = CommandResult(result.command, int(rc_text), head, result.stderr)
    squeue = CommandResult(result.command, result.returncode, squeue_out, result.stderr)
    return sacct, squeue


def squeue_status_command(job_ids: Iterable[str]) -> str:
    """ONE squeue call for all jobs slurmctld still remembers, one line per array task.

    Ids it has forgotten are left out, except when only one id is asked for: then
    squeue fails with "Invalid job id specified" (`is_unknown_job`).
    """
    return f"{_SQUEUE} --jobs={_job_list(job_ids)}"


def find_by_name_command(name: str, since: str = FIND_WINDOW) -> str:
    """The user's jobs with exactly this name that were eligible within `since`."""
    return f"{_SACCT} --name={shlex.quote(name)} --starttime={shlex.quote(since)} {_SACCT_FORMAT}"


def squeue_find_by_name_command(name: str) -> str:
    """The user's jobs with exactly this name that slurmctld still remembers."""
    # --user rather than --me, which older SLURM (before 20.11) lacks.
    return f'{_SQUEUE} --user="$(id -un)" --name={shlex.quote(name)}'


def cancel_command(job_ids: Iterable[str]) -> str:
    """scancel; an array's id cancels all of its tasks."""
    return "scancel " + _job_list(job_ids).replace(",", " ")


def exclude_nodes_command(job_ids: Iterable[str], nodes: Iterable[str]) -> str:
    """`scontrol update` of the queued jobs' excluded nodes (scontrol(1), "SPECIFICATIONS
    FOR UPDATE COMMAND, JOBS": ExcNodeList, replaced as a whole; empty clears it)."""
    names = sorted(set(nodes))
    for name in names:
        if not name or "," in name or any(c.isspace() for c in name):
            raise ValueError(f"{name!r} is not a node name")
    setting = shlex.quote("ExcNodeList=" + ",".join(names))
    return f"scontrol update JobId={_job_list(job_ids)} {setting}"


# scontrol's answers for a job that can no longer be updated because it started, ended
# or was forgotten: the segment went on without the exclusion, which is no error.
_NOT_PENDING = (
    "job is no longer pending execution",
    "job has already finished",
    "invalid job id specified",
)


def parse_update_refusals(returncode: int, stdout: str, stderr: str) -> list[str]:
    """The lines of a failed `scontrol update` that are real refusals (e.g. "Invalid
    node name"), not jobs that merely left the queue; [] when it succeeded."""
    if returncode == 0:
        return []
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    refusals = [line for line in lines if not line.lower().startswith(_NOT_PENDING)]
    return refusals if refusals or lines else [f"scontrol update failed (exit {returncode})"]


def tail_command(path: str, lines: int = 100) -> str:
    """The last `lines` lines of a file on the site (a job's stdout or stderr)."""
    return f"tail -n {int(lines)} -- {shlex.quote(path)}"


# -- errors ---------------------------------------------------------------------------------

# Messages after which the same call can succeed later: the controller or the database
# was busy, restarting or unreachable. Anything else (invalid account, partition, time
# limit, GRES, ...) is the request's fault and would fail again.
TRANSIENT_MESSAGES = (
    "socket timed out",
    "unable to contact slurm controller",
    "slurm controller not responding",
    "problem talking to the database",
    "connection refused",
    "connection timed out",
    "zero bytes were transmitted or received",
    "temporarily unable to accept job",
    "resource temporarily unavailable",
    "communication connection failure",
    "send/recv operation",
)


def is_transient(output: str) -> bool:
    """Whether a failed SLURM command's output says that a retry can help."""
    text = output.lower()
    return any(message in text for message in TRANSIENT_MESSAGES)


def is_unknown_job(result: CommandResult) -> bool:
    """squeue (or scancel) asked about one job that slurmctld has forgotten."""
    return not result.ok and "invalid job id specified" in result.stderr.lower()


def scheduler_error(site: str, action: str, result: CommandResult) -> SchedulerError:
    """A failed SLURM command as a `SchedulerError`, transient when a retry can help;
    a submission over a job submit limit is `SubmitLimitReached`."""
    output = (result.stderr.strip() or result.stdout.strip()).splitlines()
    detail = output[-1] if output else "no error output"
    limit = submit_limit(result.stderr + "\n" + result.stdout) if action == "sbatch" else None
    if limit is not None:
        return SubmitLimitReached(site, f"{action} refused: {limit}: {detail}", limit)
    return SchedulerError(
        site,
        f"{action} failed (exit {result.returncode}): {detail}",
        transient=is_transient(result.stderr + "\n" + result.stdout),
    )


# -- the client -----------------------------------------------------------------------------


class SlurmScheduler:
    """`Scheduler` for a SLURM site reached through `transport`."""

    def __init__(
        self,
        site: str,
        transport: Transport,
        slurm: SlurmSettings,
        environment: Environment,
        *,
        accounting: bool = True,
    ) -> None:
        self.site = site
        self.transport = transport
        self.slurm = slurm
        self.environment = environment
        # False: the site has no slurmdbd; status then comes from squeue alone. Also
        # switched off by itself when sacct says accounting is disabled.
        self.accounting = accounting

    def _run(self, command: str, action: str, *, stdin: bytes | None = None) -> CommandResult:
        result = self.transport.run(command, stdin=stdin)
        if not result.ok:
            raise scheduler_error(self.site, action, result)
        return result

    def _sacct(self, result: CommandResult) -> dict[str, JobStatus] | None:
        """Statuses from sacct, or None when the site turns out to have no accounting."""
        if result.ok:
            return parse_sacct(result.stdout)
        if not accounting_disabled(result.stderr + result.stdout):
            raise scheduler_error(self.site, "sacct", result)
        log.info("site %r has no SLURM accounting; using squeue from now on", self.site)
        self.accounting = False
        return None

    def _squeue(self, result: CommandResult) -> dict[str, JobStatus]:
        if is_unknown_job(result):
            return {}
        if not result.ok:
            raise scheduler_error(self.site, "squeue", result)
        return parse_squeue(result.stdout, SQUEUE_DELIMITER)

    def render(self, request: JobRequest) -> str:
        return render_sbatch(request, self.slurm, self.environment)

    def submit(self, request: JobRequest) -> str:
        script = self.render(request)
        command = submit_command(request, self.environment.effective_umask)
        result = self._run(command, "sbatch", stdin=script.encode())
        try:
            return parse_submit(result.stdout)
        except ValueError as exc:
            raise SchedulerError(self.site, str(exc)) from exc

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """ONE command per call: sacct (the record) and squeue (what slurmctld sees now)
        together; squeue's answer only counts for jobs sacct has not settled yet, or
        shows only as a placeholder (`placeholder_ids`)."""
        return self.status_and(job_ids, None)[0] if job_ids else {}

    def status_and(
        self, job_ids: Sequence[str], extra: str | None
    ) -> tuple[dict[str, JobStatus], str | None]:
        """`status`, with the output of `extra` (another command, e.g. the checkpoint
        listing of `sites.checkpoints`) from the SAME command: one round trip per poll.
        The extra output is None when the command was cut short before it."""
        if not job_ids:
            raise ValueError("no job ids given")
        if not self.accounting:
            answer, listing = self._run_with(squeue_status_command(sorted(job_ids)), extra)
            live = self._squeue(answer)
            return prefer_live({}, select_jobs(job_ids, live), job_ids), listing
        answer, listing = self._run_with(status_pair_command(job_ids), extra)
        return self._pair_status(job_ids, answer), listing

    def _run_with(self, command: str, extra: str | None) -> tuple[CommandResult, str | None]:
        if extra is None:
            return self.transport.run(command), None
        result = self.transport.run(with_listing(command, extra))
        head, listing = split_listing(result.stdout)
        return CommandResult(result.command, result.returncode, head, result.stderr), listing

    def _pair_status(self, job_ids: Sequence[str], answer: CommandResult) -> dict[str, JobStatus]:
        sacct, squeue = split_pair(answer)
        recorded = self._sacct(sacct)
        statuses: dict[str, JobStatus] = {}
        unsettled = set(job_ids)
        if recorded is not None:
            statuses = select_jobs(job_ids, recorded)
            unsettled -= settled_ids(job_ids, statuses)
        if unsettled:
            live = self._squeue(squeue)
        else:
            # sacct answers for everything; squeue only tells its placeholders apart,
            # so a failed squeue costs nothing here.
            live = {} if not squeue.ok else parse_squeue(squeue.stdout, SQUEUE_DELIMITER)
        live = select_jobs(job_ids, live)
        unsettled |= placeholder_ids(job_ids, statuses, live)
        return prefer_live(statuses, select_jobs(unsettled, live), unsettled)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.transport.run(cancel_command(job_ids))
        # Cancelling a job that already ended (or was forgotten) is not an error.
        if result.ok or is_unknown_job(result):
            return
        if "already completing or completed" in result.stderr.lower():
            return
        raise scheduler_error(self.site, "scancel", result)

    def find_by_name(self, name: str) -> list[JobStatus]:
        # Both sources: a job submitted just before a crash may not be in sacct yet,
        # and missing it here would mean submitting it twice.
        statuses: dict[str, JobStatus] = {}
        if self.accounting:
            statuses = self._sacct(self.transport.run(find_by_name_command(name))) or {}
        live = self._squeue(self.transport.run(squeue_find_by_name_command(name)))
        merged = prefer_live(statuses, live, {task_id.split("_")[0] for task_id in live})
        return [s for s in merged.values() if s.name is not None and same_job_name(s.name, name)]

    def exclude_nodes(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.transport.run(exclude_nodes_command(job_ids, nodes))
        refusals = parse_update_refusals(result.returncode, result.stdout, result.stderr)
        if refusals:
            raise SchedulerError(
                self.site,
                f"scontrol update failed: {refusals[-1]}",
                transient=is_transient("\n".join(refusals)),
            )

    def tail(self, path: str, lines: int = 100) -> str:
        """The last lines of a file on the site, e.g. `request.stderr_path(0)`."""
        return self._run(tail_command(path, lines), f"tail {path}").stdout

    # -- probes for `site check` --

    def versions(self) -> dict[str, str | None]:
        """Version of each SLURM tool on the site; None for a missing tool."""
        return parse_versions(self._run(versions_command(), "version probe").stdout)

    def partitions(self) -> dict[str, PartitionInfo]:
        return parse_sinfo(self._run(partitions_command(), "sinfo").stdout)

    def associations(self, account: str | None = None) -> list[Association]:
        """The user's associations, for `account` (default: the site's account)."""
        command = account_check_command(account or self.slurm.account)
        return parse_associations(self._run(command, "sacctmgr").stdout)


def prefer_live(
    recorded: dict[str, JobStatus], live: dict[str, JobStatus], job_ids: Iterable[str]
) -> dict[str, JobStatus]:
    """sacct's statuses, with squeue's replacing them for each of `job_ids` squeue knows
    (an array as a whole: sacct may still show it as one placeholder row).

    Linear in the number of statuses: both answers are indexed by task and array id once.
    """
    live_by_id, recorded_by_id = _by_job_id(live), _by_job_id(recorded)
    merged = dict(recorded)
    for job_id in job_ids:
        fresh = live_by_id.get(job_id)
        if fresh:
            for stale in recorded_by_id.get(job_id, ()):
                merged.pop(stale, None)
            merged.update((task_id, live[task_id]) for task_id in fresh)
    return merged


def _by_job_id(statuses: dict[str, JobStatus]) -> dict[str, list[str]]:
    """Task ids under their own id and under their array's id."""
    index: dict[str, list[str]] = {}
    for task_id in statuses:
        index.setdefault(task_id, []).append(task_id)
        base = base_job_id(task_id)
        if base != task_id:
            index.setdefault(base, []).append(task_id)
    return index
