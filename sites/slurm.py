"""SLURM: command builders (pure), and `SlurmScheduler`, a thin client over a Transport.

Layout (after PSI/J's batch executors and AiiDA's SLURM plugin):

- `sites.slurm_script`: `render_sbatch`, the batch script;
- `sites.slurm_parse`: `SLURM_STATES` and the parsers of SLURM's output;
- here: one `*_command()` per operation, the translation of SLURM's error messages
  into `SchedulerError`, and `SlurmScheduler`, where each method is one
  `transport.run` of a built command followed by its parser.

Every value placed in a command goes through `shlex.quote` exactly once, here.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence

from registry.site import Environment, SlurmSettings
from sites.errors import SchedulerError
from sites.scheduler import JobRequest, JobStatus
from sites.slurm_parse import (
    SACCT_FIELDS,
    SINFO_FORMAT,
    SLURM_STATES,
    SQUEUE_FIELDS,
    Association,
    PartitionInfo,
    accounting_disabled,
    known_job_ids,
    parse_associations,
    parse_sacct,
    parse_sinfo,
    parse_squeue,
    parse_submit,
    parse_versions,
)
from sites.slurm_script import render_sbatch
from sites.transport import CommandResult, Transport

__all__ = [
    "SLURM_STATES",
    "SlurmScheduler",
    "account_check_command",
    "cancel_command",
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

# Epoch seconds in every time field: no guessing at the cluster's time zone.
_TIME_FORMAT = "SLURM_TIME_FORMAT=%s"
_SACCT = f"{_TIME_FORMAT} sacct --noheader --parsable2 --allocations"
_SACCT_FORMAT = "--format=" + ",".join(SACCT_FIELDS)
# How far back find_by_name looks. sacct rejects "now-10min": units are spelled out.
FIND_WINDOW = "now-30days"
_SQUEUE_DELIMITER = "|"
_SQUEUE_FORMAT = "--Format=" + ",".join(f"{f}:{_SQUEUE_DELIMITER}" for f in SQUEUE_FIELDS)
VERSION_TOOLS = ("sbatch", "sacct", "squeue", "scancel", "sinfo")


# -- commands (pure) ------------------------------------------------------------------------


def _job_list(job_ids: Sequence[str]) -> str:
    for job_id in job_ids:
        base, _, task = job_id.partition("_")
        if not base.isdigit() or (task and not task.isdigit()):
            raise ValueError(f"{job_id!r} is not a SLURM job id")
    return ",".join(job_ids)


def submit_command(request: JobRequest) -> str:
    """Create the job's log and work directories, then `sbatch --parsable` the script
    read from stdin (sbatch would not create them, and the job would fail unseen)."""
    dirs = shlex.join(["mkdir", "-p", "--", request.log_dir, request.workdir])
    return f"{dirs} && sbatch --parsable"


def status_command(job_ids: Sequence[str]) -> str:
    """ONE sacct call for all jobs; `--allocations` hides job steps, not array tasks."""
    return f"{_SACCT} --jobs={_job_list(job_ids)} {_SACCT_FORMAT}"


def squeue_status_command() -> str:
    """Every job of the user that slurmctld still remembers (sites without accounting).

    Not `--jobs=...`: squeue fails outright if any one of the ids has been purged.
    Callers keep the ids they asked for (`slurm_parse.known_job_ids`).
    """
    return (
        f"{_TIME_FORMAT} squeue --noheader --array --states=all --me {shlex.quote(_SQUEUE_FORMAT)}"
    )


def find_by_name_command(name: str, since: str = FIND_WINDOW) -> str:
    """Jobs of the user with exactly this name, submitted within `since`."""
    return f"{_SACCT} --name={shlex.quote(name)} --starttime={shlex.quote(since)} {_SACCT_FORMAT}"


def squeue_find_by_name_command(name: str) -> str:
    return f"{squeue_status_command()} --name={shlex.quote(name)}"


def cancel_command(job_ids: Sequence[str]) -> str:
    return f"scancel {_job_list(job_ids).replace(',', ' ')}"


def tail_command(path: str, lines: int = 100) -> str:
    """The last `lines` lines of a file on the site (a job's stdout or stderr)."""
    return f"tail -n {int(lines)} -- {shlex.quote(path)}"


def versions_command(tools: Sequence[str] = VERSION_TOOLS) -> str:
    """One line per tool: "TOOL slurm 22.05.8", or "TOOL missing"."""
    names = " ".join(shlex.quote(t) for t in tools)
    return (
        f'for tool in {names}; do printf "%s " "$tool"; '
        'if command -v "$tool" >/dev/null 2>&1; then "$tool" --version 2>&1 | head -n 1; '
        "else echo missing; fi; done"
    )


def partitions_command() -> str:
    return f"sinfo --noheader --format={shlex.quote(SINFO_FORMAT)}"


def account_check_command(account: str | None = None) -> str:
    """The user's associations (optionally for one account): what it may submit under."""
    where = f" account={shlex.quote(account)}" if account else ""
    return (
        'sacctmgr --noheader --parsable2 show assoc user="$(id -un)"'
        f"{where} format=Account,Partition,QOS"
    )


# -- errors ---------------------------------------------------------------------------------

# Messages after which the same call can succeed later: the controller or database
# was busy, restarting or unreachable. Everything else (invalid account, partition,
# time limit, GRES...) is the request's fault and will fail again.
TRANSIENT_MESSAGES = (
    "socket timed out",
    "unable to contact slurm controller",
    "slurm controller not responding",
    "problem talking to the database",
    "slurmdbd",
    "connection refused",
    "connection timed out",
    "zero bytes were transmitted or received",
    "temporarily unable to accept job",
    "resource temporarily unavailable",
    "communication connection failure",
    "slurmctld is busy",
    "send/recv operation",
)


def is_transient(stderr: str) -> bool:
    text = stderr.lower()
    return any(message in text for message in TRANSIENT_MESSAGES)


def scheduler_error(site: str, action: str, result: CommandResult) -> SchedulerError:
    """A failed SLURM command as a `SchedulerError`, transient when a retry can help."""
    output = (result.stderr.strip() or result.stdout.strip()).splitlines()
    detail = output[-1] if output else "no error output"
    return SchedulerError(
        site,
        f"{action} failed (exit {result.returncode}): {detail}",
        transient=is_transient(result.stderr + result.stdout),
    )


# Benign scancel complaints: the job is already over (or long forgotten).
_CANCEL_DONE = ("already completing or completed", "invalid job id specified")


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
        # False: the site has no slurmdbd, so status comes from squeue (which forgets
        # finished jobs after MinJobAge, 300 s by default).
        self.accounting = accounting

    def _run(self, command: str, action: str, *, stdin: bytes | None = None) -> CommandResult:
        result = self.transport.run(command, stdin=stdin)
        if not result.ok:
            raise scheduler_error(self.site, action, result)
        return result

    def render(self, request: JobRequest) -> str:
        return render_sbatch(request, self.slurm, self.environment)

    def submit(self, request: JobRequest) -> str:
        script = self.render(request)
        result = self._run(submit_command(request), "sbatch", stdin=script.encode())
        try:
            return parse_submit(result.stdout)
        except ValueError as exc:
            raise SchedulerError(self.site, str(exc)) from exc

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        if self.accounting:
            result = self.transport.run(status_command(job_ids))
            if result.ok:
                return parse_sacct(result.stdout)
            if not accounting_disabled(result.stderr):
                raise scheduler_error(self.site, "sacct", result)
            log.info("site %r runs without accounting; using squeue from now on", self.site)
            self.accounting = False
        result = self._run(squeue_status_command(), "squeue")
        return known_job_ids(job_ids, parse_squeue(result.stdout, _SQUEUE_DELIMITER))

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.transport.run(cancel_command(job_ids))
        if result.ok:
            return
        lines = [line for line in result.stderr.lower().splitlines() if line.strip()]
        if lines and all(any(done in line for done in _CANCEL_DONE) for line in lines):
            return
        raise scheduler_error(self.site, "scancel", result)

    def find_by_name(self, name: str) -> list[JobStatus]:
        if self.accounting:
            result = self.transport.run(find_by_name_command(name))
            if result.ok:
                statuses = parse_sacct(result.stdout)
                return [s for s in statuses.values() if s.name == name]
            if not accounting_disabled(result.stderr):
                raise scheduler_error(self.site, "sacct", result)
            self.accounting = False
        result = self._run(squeue_find_by_name_command(name), "squeue")
        statuses = parse_squeue(result.stdout, _SQUEUE_DELIMITER)
        return [s for s in statuses.values() if s.name == name]

    def tail(self, path: str, lines: int = 100) -> str:
        """The last lines of a file on the site, e.g. `request.stderr_path(0)`."""
        result = self.transport.run(tail_command(path, lines))
        if not result.ok:
            raise scheduler_error(self.site, f"tail {path}", result)
        return result.stdout

    # -- probes for `site check` --

    def versions(self) -> dict[str, str | None]:
        """Version of each SLURM tool on the site; None for a missing tool."""
        return parse_versions(self._run(versions_command(), "version probe").stdout)

    def partitions(self) -> dict[str, PartitionInfo]:
        return parse_sinfo(self._run(partitions_command(), "sinfo").stdout)

    def associations(self, account: str | None = None) -> list[Association]:
        """The user's associations, for the configured account unless given."""
        command = account_check_command(account or self.slurm.account)
        return parse_associations(self._run(command, "sacctmgr").stdout)
