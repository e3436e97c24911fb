"""`LocalScheduler`: the `Scheduler` of a site that runs jobs as processes on this machine.

Each task of a job gets a detached runner (`python -m sites.local.runner`, see there for
the file layout and what is not enforced). All state is kept in files under
`<root>/.hpcfleet-local/`, so jobs outlive the orchestrator and a new `LocalScheduler`
on the same root reports, cancels and finds everything an earlier one submitted.
Ids look like SLURM's: "7" for a plain job, "7_2" for task 2 of array 7.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from registry.owner_only import private_dir
from registry.site import Environment
from registry.states import JobState
from sites.errors import SchedulerError
from sites.jobscript import render_job_body
from sites.local.runner import (
    KILL_GRACE_SECONDS,
    POLL_SECONDS,
    STATE_DIR_NAME,
    LocalJobFile,
    LocalTaskFile,
    cancel_path,
    jobs_dir,
    now_iso,
    observe,
    parse_iso,
    read_spawn,
    read_task,
    slots_dir,
    spawn_path,
    write_json_atomic,
    write_task,
)
from sites.local.transport import is_transient_oserror
from sites.processes import (
    process_start_ticks,
    reap,
    signal_group,
    signal_process,
    start_process_group,
)
from sites.scheduler import JobRequest, JobStatus

logger = logging.getLogger(__name__)

# How long cancel waits for SIGKILLed runners to be seen gone.
_AFTER_SIGKILL_SECONDS = 5.0
_JOB_ID = re.compile(r"^(\d+)(?:_(\d+))?$")
# The runner is started as `python -m sites.local.runner` from the directory holding the
# `sites` package, so that it imports this very code even when it is not installed.
_CODE_ROOT = Path(__file__).resolve().parent.parent


# Runners this process started and has not reaped yet. They are our children whatever
# scheduler object started them, so any of them collects their exit status.
_UNREAPED_RUNNERS: set[int] = set()
_UNREAPED_LOCK = threading.Lock()


def _reap_runners() -> None:
    """Collect runners that have exited, so that they do not linger as zombies."""
    with _UNREAPED_LOCK:
        for pid in list(_UNREAPED_RUNNERS):
            if reap(pid):
                _UNREAPED_RUNNERS.discard(pid)


@dataclass(frozen=True)
class _TaskRef:
    """One task of a known job, as `status`/`cancel` address it."""

    key: str  # "7" or "7_2"
    jobdir: Path
    index: int
    job: LocalJobFile


class LocalScheduler:
    """Run jobs as detached local processes, at most `slots` tasks at a time."""

    def __init__(
        self,
        site: str,
        root: Path,
        slots: int = 2,
        *,
        environment: Environment | None = None,
        kill_grace_seconds: float = KILL_GRACE_SECONDS,
    ) -> None:
        """`kill_grace_seconds`: how long a cancelled or timed-out task may take to exit
        after SIGTERM before its process group gets SIGKILL. The runners run under the
        site's `environment.umask`, and so the tasks' log files and everything the tasks
        create."""
        if slots < 1:
            raise ValueError(f"a local scheduler needs at least one slot, not {slots}")
        self.site = site
        self.root = Path(root)
        self.slots = slots
        self.environment = environment or Environment()
        self.kill_grace_seconds = float(kill_grace_seconds)
        self.umask = self.environment.effective_umask
        self.state_dir = self.root / STATE_DIR_NAME

    # ------------------------------------------------------------------ protocol

    def render(self, request: JobRequest) -> str:
        """The job script: a header naming the job, then the shared job body."""
        res = request.resources
        header = [
            "#!/bin/bash",
            # json.dumps keeps the name on one line whatever it contains.
            f"# hpcfleet local job {json.dumps(request.name)}",
            f"# tasks: {len(request.tasks)}; task i runs with HPCFLEET_ARRAY_INDEX=i",
            f"# resources: nodes={res.nodes} cpus={res.cpus} gpus={res.gpus} "
            f"time_seconds={res.time_seconds} (only the time limit is enforced)",
        ]
        if res.tasks_per_node > 1:
            header.append(
                f"# {res.tasks_per_node} copies of each task on this machine (sites.launcher)"
            )
        body = render_job_body(request, self.environment)
        return "\n".join(header) + "\n" + body

    def submit(self, request: JobRequest) -> str:
        """Record the job in files and start one detached runner per task."""
        _reap_runners()
        self._check_request(request)
        try:
            script = self.render(request)
        except ValueError as exc:
            raise SchedulerError(self.site, f"job {request.name!r}: {exc}") from exc
        try:
            job_id = self._allocate_id()
            jobdir = self._write_job(job_id, request, script)
            self._index_name(request.name, job_id)
        except OSError as exc:
            raise self._error(f"cannot submit job {request.name!r}", exc) from exc
        self._start_runners(job_id, jobdir, len(request.tasks))
        return job_id

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Status of every task of the given jobs, read from their state files."""
        _reap_runners()
        try:
            tasks, broken = self._resolve(job_ids)
            result = {key: _unknown(key, reason) for key, reason in broken.items()}
            for task in tasks:
                result[task.key] = self._task_status(task)
        except OSError as exc:
            raise self._error("cannot read job state", exc) from exc
        return result

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel the given jobs and tasks: marker, SIGTERM, then SIGKILL after a grace.

        Returns once every addressed task is in a final state.
        """
        _reap_runners()
        try:
            tasks, broken = self._resolve(job_ids)
            for key, reason in broken.items():
                logger.warning("site %r: cannot cancel job %s: %s", self.site, key, reason)
            for task in tasks:
                cancel_path(task.jobdir, task.index).touch()
            self._signal_tasks(tasks, signal.SIGTERM)
            # The runners escalate to SIGKILL themselves; we only step in for a stuck one.
            grace = max((t.job.kill_grace_seconds for t in tasks), default=0.0)
            left = self._wait_until_final(tasks, grace + 1.0)
            if left:
                self._signal_tasks(left, signal.SIGKILL)
                self._wait_until_final(left, _AFTER_SIGKILL_SECONDS)
        except OSError as exc:
            raise self._error("cannot cancel jobs", exc) from exc

    def find_by_name(self, name: str) -> list[JobStatus]:
        """Every task of every job submitted with exactly this name (oldest first)."""
        try:
            lines = self._name_index(name).read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error(f"cannot read the job index for {name!r}", exc) from exc
        ids = list(dict.fromkeys(lines))
        return [s for s in self.status(ids).values() if s.name == name]

    def exclude_nodes(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        """Nothing to do: every task runs on this one machine, which no job excludes
        (`flows.retry.failed_nodes` leaves "localhost" out)."""

    # ------------------------------------------------------------------ submit

    def _check_request(self, request: JobRequest) -> None:
        problem = None
        if not request.tasks:
            problem = "it has no tasks"
        elif not os.path.isabs(request.log_dir):
            problem = f"log_dir must be an absolute path, not {request.log_dir!r}"
        else:
            for kind, deps in (
                ("after_ok", request.after_ok),
                ("after_not_ok", request.after_not_ok),
            ):
                for dep in deps:
                    match = _JOB_ID.match(dep)
                    if not match or not (jobs_dir(self.state_dir) / match[1] / "job.json").exists():
                        problem = f"{kind} names unknown job {dep!r}"
        if problem:
            raise SchedulerError(self.site, f"cannot submit job {request.name!r}: {problem}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the scheduler's lock (against other processes on the same root)."""
        private_dir(self.state_dir)
        with open(self.state_dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _allocate_id(self) -> str:
        counter = self.state_dir / "next_id"
        with self._locked():
            try:
                last = int(counter.read_text().strip() or 0)
            except FileNotFoundError:
                last = 0
            except ValueError:
                last = 0  # a damaged counter: the loop below skips ids in use
            new = last + 1
            while (jobs_dir(self.state_dir) / str(new)).exists():
                new += 1
            tmp = counter.with_name(".next_id.tmp")
            tmp.write_text(f"{new}\n")
            os.replace(tmp, counter)
        return str(new)

    def _write_job(self, job_id: str, request: JobRequest, script: str) -> Path:
        """Write the job's directory under a temporary name, then rename it into place:
        a job directory is either complete or absent."""
        jobs = jobs_dir(self.state_dir)
        jobdir = jobs / job_id
        tmpdir = jobs / f".{job_id}.tmp"
        private_dir(jobs)
        tmpdir.mkdir(mode=0o700)
        try:
            self._fill_job_dir(tmpdir, request, script)
            os.rename(tmpdir, jobdir)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return jobdir

    def _fill_job_dir(self, tmpdir: Path, request: JobRequest, script: str) -> None:
        slots_dir(self.state_dir).mkdir(mode=0o700, exist_ok=True)
        # As sbatch's submitter does: a job must not fail for want of its directories.
        for directory in (request.log_dir, request.workdir):
            private_dir(Path(directory))
        submitted = now_iso()
        count = len(request.tasks)
        record = LocalJobFile(
            name=request.name,
            tasks=count,
            is_array=request.is_array,
            resources=request.resources,
            stdout=tuple(request.stdout_path(i) for i in range(count)),
            stderr=tuple(request.stderr_path(i) for i in range(count)),
            after_ok=tuple(request.after_ok),
            after_not_ok=tuple(request.after_not_ok),
            submitted=submitted,
            slots=self.slots,
            kill_grace_seconds=self.kill_grace_seconds,
        )
        # The script holds the site's and the stage's env values: owner-only.
        fd = os.open(tmpdir / "script.sh", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(script)
        write_json_atomic(tmpdir / "job.json", record.to_json())
        for index in range(count):
            initial = LocalTaskFile(JobState.PENDING, submitted=submitted, reason="runner starting")
            write_task(tmpdir, index, initial)

    def _name_index(self, name: str) -> Path:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        return self.state_dir / "names" / f"{digest}.ids"

    def _index_name(self, name: str, job_id: str) -> None:
        path = self._name_index(name)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # One small O_APPEND write: concurrent submitters cannot interleave inside it.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{job_id}\n".encode())
        finally:
            os.close(fd)

    def _start_runners(self, job_id: str, jobdir: Path, count: int) -> None:
        for index in range(count):
            try:
                # A runner outlives the object that started it: `_reap_runners` collects it.
                proc = start_process_group(
                    [sys.executable, "-m", "sites.local.runner", str(jobdir), str(index)],
                    cwd=_CODE_ROOT,
                    detached=True,
                    umask=int(self.umask, 8),
                )
                with _UNREAPED_LOCK:
                    _UNREAPED_RUNNERS.add(proc.pid)
                spawn = {"pid": proc.pid, "start": process_start_ticks(proc.pid)}
                write_json_atomic(spawn_path(jobdir, index), spawn)
            except OSError as exc:
                # Stop what did start; the job is found again as CANCELLED, not left PENDING.
                for other in range(count):
                    cancel_path(jobdir, other).touch()
                raise self._error(f"cannot start the runner of job {job_id}", exc) from exc

    # ------------------------------------------------------------------ status, cancel

    def _resolve(self, job_ids: Sequence[str]) -> tuple[list[_TaskRef], dict[str, str]]:
        """The tasks the ids address (arrays expand), and ids whose job record is broken."""
        tasks: dict[str, _TaskRef] = {}
        broken: dict[str, str] = {}
        jobs: dict[str, LocalJobFile | None] = {}
        for job_id in job_ids:
            match = _JOB_ID.match(job_id)
            if not match:
                continue
            base, index = match[1], match[2]
            jobdir = jobs_dir(self.state_dir) / base
            if base not in jobs:
                try:
                    jobs[base] = LocalJobFile.load(jobdir)
                except FileNotFoundError:
                    jobs[base] = None
                except ValueError as exc:
                    jobs[base] = None
                    broken[job_id] = f"malformed job record: {exc}"
            job = jobs[base]
            if job is None:
                continue
            if index is None:
                indices: Sequence[int] = range(job.tasks)
            elif job.is_array and int(index) < job.tasks:
                indices = [int(index)]
            else:
                continue
            for i in indices:
                key = f"{base}_{i}" if job.is_array else base
                tasks[key] = _TaskRef(key, jobdir, i, job)
        return list(tasks.values()), broken

    def _current(self, task: _TaskRef) -> LocalTaskFile | str:
        """The task's real state (settling a vanished runner), or why it is unknown."""
        try:
            record, vanished = observe(task.jobdir, task.index, read_task(task.jobdir, task.index))
        except FileNotFoundError:
            return "task state file missing"
        except ValueError as exc:
            return f"malformed task state: {exc}"
        if vanished:
            # Nothing supervises what the runner left running: stop it, since the state
            # we report is final. Then make that state durable.
            signal_group(record.pgid, record.pgid_start, signal.SIGKILL)
            write_task(task.jobdir, task.index, record)
        return record

    def _task_status(self, task: _TaskRef) -> JobStatus:
        record = self._current(task)
        if isinstance(record, str):
            return _unknown(task.key, record, task.job.name)
        started, ended = parse_iso(record.started), parse_iso(record.ended)
        elapsed = None
        if started is not None:
            until = ended if ended is not None else datetime.now(UTC)
            elapsed = max(0.0, (until - started).total_seconds())
        res = task.job.resources
        return JobStatus(
            job_id=task.key,
            state=record.state,
            exit_code=record.exit_code,
            name=task.job.name,
            started=started,
            ended=ended,
            elapsed_seconds=elapsed,
            gpu_hours=res.nodes * res.gpus * (elapsed or 0.0) / 3600,
            node="localhost",
            reason=record.reason,
        )

    def _signal_tasks(self, tasks: Sequence[_TaskRef], sig: int) -> None:
        """Signal each task's process group and runner, if they are still the recorded ones."""
        for task in tasks:
            try:
                record = read_task(task.jobdir, task.index)
                # Until the runner records itself, only its submitter knows its pid.
                runner = (
                    (record.runner_pid, record.runner_start)
                    if record.runner_pid is not None
                    else read_spawn(task.jobdir, task.index)
                )
            except (FileNotFoundError, ValueError):
                continue
            signal_group(record.pgid, record.pgid_start, sig)
            if runner is not None and not record.state.is_final:
                signal_process(*runner, sig)

    def _wait_until_final(self, tasks: Sequence[_TaskRef], seconds: float) -> list[_TaskRef]:
        """Poll until every task is final (or unknown) or `seconds` pass; the rest."""
        deadline = time.monotonic() + seconds
        left = list(tasks)
        while left:
            left = [t for t in left if not _is_settled(self._current(t))]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        return left

    def _error(self, what: str, exc: OSError) -> SchedulerError:
        return SchedulerError(self.site, f"{what}: {exc}", transient=is_transient_oserror(exc))


def _is_settled(record: LocalTaskFile | str) -> bool:
    return isinstance(record, str) or record.state.is_final


def _unknown(key: str, reason: str, name: str | None = None) -> JobStatus:
    return JobStatus(job_id=key, state=JobState.UNKNOWN, name=name, reason=reason)
