"""The local job runner, and the files it shares with `sites.local.scheduler`.

`python -m sites.local.runner JOBDIR INDEX` runs task INDEX of a job submitted by
`LocalScheduler`: it waits for the job's `after_ok` and `after_not_ok` dependencies and
for a free slot,
runs `bash script.sh` in its own process group, enforces the time limit, honours
cancellation and records every step in a state file. All state lives in files, so a
new orchestrator (or a new `LocalScheduler`) sees everything the old one started.

Files under `<root>/.hpcfleet-local/`:

    lock, next_id             job id counter (flock'ed on `lock`)
    names/<sha256>.ids        ids of the jobs with one name, one a line
    slots/<k>.lock            slot k; flock'ed by the runner of a running task
    jobs/<id>/job.json        the job (see `LocalJobFile`)
    jobs/<id>/script.sh       its script
    jobs/<id>/task-<i>.json   state of task i (see `LocalTaskFile`), replaced atomically
    jobs/<id>/task-<i>.spawn  runner pid and start time, as recorded by the submitter
    jobs/<id>/task-<i>.cancel cancel marker

A task ends with its script: whatever `bash script.sh` leaves running in its process
group is killed then (as SLURM ends a job). A cancelled or timed-out task gets SIGTERM
and `kill_grace_seconds` to exit (a checkpoint's worth of time) before SIGKILL.

Not enforced: memory (`mem_mb`), CPUs, GPUs and nodes; every task takes one slot, and
only the time limit is imposed. Linux only: processes are identified by pid plus their
start time from /proc (`sites.processes`), so that a reused pid is never mistaken for
ours.

This module is imported at every task start: it uses the standard library and
stdlib-only project modules, nothing more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from registry.states import JobState
from sites.processes import (
    child_has_exited,
    group_alive,
    is_alive,
    process_start_ticks,
    signal_own_group,
    start_process_group,
)
from sites.scheduler import JobResources

STATE_DIR_NAME = ".hpcfleet-local"
POLL_SECONDS = 0.1  # slot, cancel and time-limit checks
DEPENDENCY_POLL_SECONDS = 0.5  # dependencies are read from files: poll them less often
KILL_GRACE_SECONDS = 5.0  # default time between SIGTERM and SIGKILL of a task's group
# A task whose runner has not recorded itself this long after submission never will
# (the submitter died between writing the job and starting its runners).
RUNNER_START_GRACE_SECONDS = 60.0

# How long after SIGKILL a group may linger (a process stuck in the kernel) before the
# runner records its verdict anyway.
_UNKILLABLE_SECONDS = 10.0

RUNNER_VANISHED = "local runner vanished"
DEPENDENCY_NEVER_SATISFIED = "dependency never satisfied"


# --------------------------------------------------------------------------- files


def jobs_dir(state_dir: Path) -> Path:
    return state_dir / "jobs"


def slots_dir(state_dir: Path) -> Path:
    return state_dir / "slots"


def task_state_path(jobdir: Path, index: int) -> Path:
    return jobdir / f"task-{index}.json"


def spawn_path(jobdir: Path, index: int) -> Path:
    return jobdir / f"task-{index}.spawn"


def cancel_path(jobdir: Path, index: int) -> Path:
    return jobdir / f"task-{index}.cancel"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` in one step: a reader sees the old or the new file."""
    # Unique per writer (process and thread), so that writers never share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; ValueError if it is not one (OSError if unreadable)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object")
    return data


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is None:
        return None
    # bool is a subclass of int: keep the two apart.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"field {key!r} should be {kind.__name__}, not {value!r}")
    return value


def _required(data: dict[str, Any], key: str, kind: type) -> Any:
    if data.get(key) is None:
        raise ValueError(f"field {key!r} is missing")
    return _optional(data, key, kind)


def _strings(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"field {key!r} should be a list of strings")
    return tuple(value)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LocalJobFile:
    """`jobs/<id>/job.json`: what the runners of a job need, written once at submit."""

    name: str
    tasks: int
    is_array: bool
    resources: JobResources
    stdout: tuple[str, ...]  # one path per task
    stderr: tuple[str, ...]
    after_ok: tuple[str, ...]
    submitted: str
    slots: int
    kill_grace_seconds: float = KILL_GRACE_SECONDS
    after_not_ok: tuple[str, ...] = ()  # jobs that must all end other than COMPLETED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalJobFile:
        resources = _required(data, "resources", dict)
        for key in ("nodes", "cpus", "gpus", "time_seconds"):
            _required(resources, key, int)
        try:
            job_resources = JobResources(**resources)
        except TypeError as exc:
            raise ValueError(f"field 'resources': {exc}") from None
        record = cls(
            name=_required(data, "name", str),
            tasks=_required(data, "tasks", int),
            is_array=_required(data, "is_array", bool),
            resources=job_resources,
            stdout=_strings(data, "stdout"),
            stderr=_strings(data, "stderr"),
            after_ok=_strings(data, "after_ok"),
            submitted=_required(data, "submitted", str),
            slots=_required(data, "slots", int),
            kill_grace_seconds=_required(data, "kill_grace_seconds", float),
            # Absent from the files of jobs written before chains existed.
            after_not_ok=_strings(data, "after_not_ok") if "after_not_ok" in data else (),
        )
        if record.tasks < 1 or record.slots < 1:
            raise ValueError("a job needs at least one task and one slot")
        if len(record.stdout) != record.tasks or len(record.stderr) != record.tasks:
            raise ValueError("one stdout and one stderr path per task expected")
        return record

    @classmethod
    def load(cls, jobdir: Path) -> LocalJobFile:
        return cls.from_json(read_json_object(jobdir / "job.json"))


@dataclass(frozen=True)
class LocalTaskFile:
    """`jobs/<id>/task-<i>.json`: the state of one task.

    The runner identifies itself by pid and /proc start time; `pgid` is the task's
    process group, whose leader (`bash script.sh`) started at `pgid_start`.
    """

    state: JobState
    submitted: str | None = None
    started: str | None = None
    ended: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    runner_pid: int | None = None
    runner_start: int | None = None
    pgid: int | None = None
    pgid_start: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalTaskFile:
        state = data.get("state")
        if not isinstance(state, str) or state not in JobState.__members__:
            raise ValueError(f"unknown state {state!r}")
        ints = ("exit_code", "runner_pid", "runner_start", "pgid", "pgid_start")
        strs = ("submitted", "started", "ended", "reason")
        for key in ("started", "ended", "submitted"):
            try:
                parse_iso(_optional(data, key, str))
            except ValueError as exc:
                raise ValueError(f"field {key!r}: {exc}") from None
        return cls(
            state=JobState(state),
            **{key: _optional(data, key, int) for key in ints},
            **{key: _optional(data, key, str) for key in strs},
        )


def read_task(jobdir: Path, index: int) -> LocalTaskFile:
    """The recorded state of task `index`; ValueError if malformed, OSError if unreadable."""
    return LocalTaskFile.from_json(read_json_object(task_state_path(jobdir, index)))


def write_task(jobdir: Path, index: int, record: LocalTaskFile) -> None:
    write_json_atomic(task_state_path(jobdir, index), record.to_json())


# --------------------------------------------------------------------------- liveness


def read_spawn(jobdir: Path, index: int) -> tuple[int, int | None] | None:
    """The runner's pid and start time as the submitter recorded them, if it did."""
    try:
        data = read_json_object(spawn_path(jobdir, index))
    except FileNotFoundError:
        return None
    return _required(data, "pid", int), _optional(data, "start", int)


def observe(jobdir: Path, index: int, record: LocalTaskFile) -> tuple[LocalTaskFile, bool]:
    """The task's real state: `record`, unless its runner is gone without finishing.

    Returns the record and whether the runner vanished (the record then says
    NODE_FAIL, or CANCELLED when a cancel was asked for). Nothing is written.
    """
    if record.state.is_final:
        return record, False
    if record.runner_pid is not None:
        runner: tuple[int, int | None] | None = (record.runner_pid, record.runner_start)
    else:
        runner = read_spawn(jobdir, index)
    cancelled = cancel_path(jobdir, index).exists()
    if runner is None:
        submitted = parse_iso(record.submitted)
        age = (datetime.now(UTC) - submitted).total_seconds() if submitted else 0.0
        if cancelled:
            return _ended(record, JobState.CANCELLED, "cancelled before its runner started"), True
        if age > RUNNER_START_GRACE_SECONDS:
            return _ended(record, JobState.NODE_FAIL, "local runner never started"), True
        return record, False
    if is_alive(*runner):
        return record, False
    # The runner writes its final state before it exits: read again before concluding.
    latest = read_task(jobdir, index)
    if latest.state.is_final:
        return latest, False
    if cancelled:
        return _ended(latest, JobState.CANCELLED, f"cancelled ({RUNNER_VANISHED})"), True
    return _ended(latest, JobState.NODE_FAIL, RUNNER_VANISHED), True


def _ended(record: LocalTaskFile, state: JobState, reason: str) -> LocalTaskFile:
    return replace(record, state=state, reason=reason, ended=now_iso())


def dependency_outcome(jobs: Path, dep_id: str, completed: set[tuple[str, int]]) -> JobState | None:
    """COMPLETED when every task of `dep_id` ("12" or "12_3") completed, the final state
    of one that ended otherwise, None while undecided. `completed` caches tasks seen
    COMPLETED (final states never change, so they are not read again)."""
    base, _, task = dep_id.partition("_")
    jobdir = jobs / base
    try:
        job = LocalJobFile.load(jobdir)
    except FileNotFoundError:
        return JobState.UNKNOWN
    except ValueError:
        return None  # status shows the malformed job as UNKNOWN; someone can cancel us
    indices = [int(task)] if task.isdigit() else range(job.tasks)
    undecided = False
    for index in indices:
        if (base, index) in completed:
            continue
        try:
            record, _ = observe(jobdir, index, read_task(jobdir, index))
        except (ValueError, FileNotFoundError):
            undecided = True
            continue
        if record.state is JobState.COMPLETED:
            completed.add((base, index))
        elif record.state.is_final:
            return record.state
        else:
            undecided = True
    return None if undecided else JobState.COMPLETED


# --------------------------------------------------------------------------- runner


class TaskRunner:
    """Runs one task: PENDING (dependencies, then a slot) -> RUNNING -> a final state."""

    def __init__(self, jobdir: Path, index: int) -> None:
        self.jobdir = jobdir
        self.index = index
        self.state_dir = jobdir.parent.parent
        self.job = LocalJobFile.load(jobdir)
        self.record = read_task(jobdir, index)
        self.stop_requested = False  # set by SIGTERM/SIGINT/SIGHUP
        self.pgid: int | None = None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def cancel_requested(self) -> bool:
        return self.stop_requested or cancel_path(self.jobdir, self.index).exists()

    def run(self) -> None:
        if self.record.state.is_final:  # already settled (cancelled before we started)
            return
        pid = os.getpid()
        self._save(runner_pid=pid, runner_start=process_start_ticks(pid), reason="starting")
        if not self._wait_for_dependencies():
            return
        slot = self._acquire_slot()
        if slot is None:
            return
        try:
            self._run_script()
        finally:
            os.close(slot)  # frees the slot (so would our death)

    def fail(self, error: BaseException) -> None:
        """Record an unexpected error of the runner itself and stop the task."""
        if self.pgid is not None:
            signal_own_group(self.pgid, signal.SIGKILL)
        self._finish(JobState.NODE_FAIL, f"local runner failed: {error!r}")

    def _save(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)
        write_task(self.jobdir, self.index, self.record)

    def _finish(self, state: JobState, reason: str | None, exit_code: int | None = None) -> None:
        self._save(state=state, reason=reason, exit_code=exit_code, ended=now_iso())

    def _wait_for_dependencies(self) -> bool:
        """Wait until every `after_ok` job completed and every `after_not_ok` job ended
        otherwise; a job that ends the wrong way (or is gone) cancels this one, as
        SLURM's `--kill-on-invalid-dep=yes` does."""
        waiting = [(dep, True) for dep in self.job.after_ok]
        waiting += [(dep, False) for dep in self.job.after_not_ok]
        if waiting:
            self._save(reason="waiting for dependencies: " + ", ".join(d for d, _ in waiting))
        completed: set[tuple[str, int]] = set()
        jobs = jobs_dir(self.state_dir)
        while waiting:
            if self.cancel_requested():
                self._finish(JobState.CANCELLED, "cancelled while waiting for dependencies")
                return False
            still: list[tuple[str, bool]] = []
            for dep, must_complete in waiting:
                outcome = dependency_outcome(jobs, dep, completed)
                if outcome is None:
                    still.append((dep, must_complete))
                elif outcome is JobState.UNKNOWN or must_complete != outcome.is_success:
                    self._finish(
                        JobState.CANCELLED,
                        f"{DEPENDENCY_NEVER_SATISFIED}: job {dep} ended {outcome.value}",
                    )
                    return False
            waiting = still
            if waiting:
                time.sleep(DEPENDENCY_POLL_SECONDS)
        return True

    def _acquire_slot(self) -> int | None:
        """An fd holding one slot's lock, or None if cancelled while waiting."""
        self._save(reason=f"waiting for a free slot ({self.job.slots} slots)")
        directory = slots_dir(self.state_dir)
        fds = [
            os.open(directory / f"{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            for k in range(self.job.slots)
        ]
        try:
            while not self.cancel_requested():
                for fd in fds:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    fds.remove(fd)
                    return fd
                time.sleep(POLL_SECONDS)
        finally:
            for fd in fds:
                os.close(fd)
        self._finish(JobState.CANCELLED, "cancelled while pending")
        return None

    def _run_script(self) -> None:
        env = dict(os.environ, HPCFLEET_ARRAY_INDEX=str(self.index))
        with contextlib.ExitStack() as logs:
            try:
                stdout = logs.enter_context(open(self.job.stdout[self.index], "wb"))
                stderr = logs.enter_context(open(self.job.stderr[self.index], "wb"))
            except OSError as exc:
                self._finish(JobState.FAILED, f"cannot open the task's log files: {exc}")
                return
            # Its own group (in our session), so that we can stop all of it.
            proc = start_process_group(
                ["bash", str(self.jobdir / "script.sh")],
                cwd=self.jobdir,
                env=env,
                stdout=stdout,
                stderr=stderr,
                new_session=False,
            )
        self.pgid = proc.pid
        self._save(
            state=JobState.RUNNING,
            reason=None,
            started=now_iso(),
            pgid=proc.pid,
            pgid_start=process_start_ticks(proc.pid),
        )
        stopped_as = self._supervise(proc.pid)
        # The leader has exited but is not yet reaped, so its pid still names the group:
        # clear whatever it left behind before the number can be reused.
        signal_own_group(proc.pid, signal.SIGKILL)
        returncode = proc.wait()
        self.pgid = None  # reaped: the number may now go to another process
        exit_code = returncode if returncode >= 0 else 128 - returncode
        if stopped_as is not None:
            self._finish(stopped_as[0], stopped_as[1], exit_code)
        elif returncode == 0:
            self._finish(JobState.COMPLETED, None, 0)
        else:
            self._finish(JobState.FAILED, f"exit code {exit_code}", exit_code)

    def _supervise(self, pgid: int) -> tuple[JobState, str] | None:
        """Wait for the task to end, stopping its group on cancel or time limit.

        Returns the final state to record if we stopped it, None if it ended by itself.
        A stopped group gets the whole grace between SIGTERM and SIGKILL, even once
        `bash script.sh` itself is gone: the processes it started may be checkpointing.
        """
        deadline = time.monotonic() + self.job.resources.time_seconds
        stopped_as: tuple[JobState, str] | None = None
        kill_at = give_up_at = float("inf")
        while True:
            leader_done = child_has_exited(pgid)
            now = time.monotonic()
            if stopped_as is None:
                stopped_as = self._stop_reason(now >= deadline)
                if stopped_as is not None:
                    signal_own_group(pgid, signal.SIGTERM)
                    kill_at = now + self.job.kill_grace_seconds
                    give_up_at = kill_at + _UNKILLABLE_SECONDS
                elif leader_done:
                    return None
            elif (leader_done and not group_alive(pgid)) or now >= give_up_at:
                return stopped_as  # all gone, or stuck in the kernel past any help
            elif now >= kill_at:
                signal_own_group(pgid, signal.SIGKILL)
            time.sleep(POLL_SECONDS)

    def _stop_reason(self, past_deadline: bool) -> tuple[JobState, str] | None:
        if self.cancel_requested():
            return JobState.CANCELLED, "cancelled"
        if past_deadline:
            return JobState.TIMEOUT, f"time limit of {self.job.resources.time_seconds} s reached"
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m sites.local.runner JOBDIR INDEX", file=sys.stderr)
        return 2
    runner = TaskRunner(Path(args[0]), int(args[1]))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, runner.request_stop)
    try:
        runner.run()
    except Exception as exc:  # the runner's last word: status would only say "vanished"
        runner.fail(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
