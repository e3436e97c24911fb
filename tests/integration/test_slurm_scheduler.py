"""SlurmScheduler against the real SLURM sandbox (tests/sandbox).

Commands reach the site through `UserTransport`, a test-only Transport that runs them
locally as the sandbox user with the site's SLURM_CONF, exactly what an ssh login to the
site gives (the SSH transport is tested on its own). Run with:

    .venv/bin/pytest -p tests.sandbox.fixtures -m slurm tests/integration/test_slurm_scheduler.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from registry.site import Environment, Partition, SlurmSettings
from registry.states import JobState
from sites.errors import SchedulerError
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec
from sites.slurm.parse import parse_sacct, same_job_name
from sites.slurm.scheduler import SlurmScheduler, status_command
from sites.transport import CommandResult
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = pytest.mark.slurm

SITE = "site-b"
# sacct lags slurmctld by a few seconds; this only bounds a hung sandbox.
DEADLINE_S = 90.0
SETTINGS = SlurmSettings(
    account="sandbox",
    partitions=[Partition(name="cpu", default=True), Partition(name="gpu", gpus_per_node=2)],
)


class UserTransport:
    """Runs commands as the sandbox user on this machine, with one site's SLURM_CONF."""

    def __init__(self, site: SandboxSite, slurm_conf: Path | None = None) -> None:
        self.site = site.name
        self._target = site
        self._env = {
            "HOME": str(site.home),
            "USER": site.user,
            "LOGNAME": site.user,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "SLURM_CONF": str(slurm_conf or site.slurm_conf),
        }
        self.commands: list[str] = []

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        self.commands.append(command)
        argv = ["runuser", "-u", self._target.user, "--", "env", "-i"]
        argv += [f"{k}={v}" for k, v in self._env.items()] + ["bash", "-c", command]
        done = subprocess.run(
            argv,
            input=stdin or b"",
            capture_output=True,
            cwd=self._target.home,
            timeout=timeout or 60.0,
            check=False,
        )
        return CommandResult(
            command, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()
        )

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError("not needed by the scheduler")

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError("not needed by the scheduler")

    def close(self) -> None:
        pass


@pytest.fixture
def site(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site(SITE)


@pytest.fixture
def transport(site: SandboxSite) -> UserTransport:
    return UserTransport(site)


@pytest.fixture
def scheduler(transport: UserTransport) -> SlurmScheduler:
    return SlurmScheduler(SITE, transport, SETTINGS, Environment())


@pytest.fixture
def workdir(site: SandboxSite, slurm_sandbox: Sandbox) -> Iterator[str]:
    path = f"{site.home}/slurm-scheduler-test/{uuid.uuid4().hex[:8]}"
    yield path
    slurm_sandbox.run_on(site, ["rm", "-rf", "--", path])


def request(workdir: str, *tasks: TaskSpec, **kwargs: object) -> JobRequest:
    fields: dict[str, object] = {
        "name": f"hpcfleet-test-{uuid.uuid4().hex[:8]}-stage-1",
        "workdir": workdir,
        "log_dir": f"{workdir}/logs",
        "tasks": tasks,
        "resources": JobResources(time_seconds=300),
    }
    return JobRequest(**(fields | kwargs))  # type: ignore[arg-type]


def wait_final(
    scheduler: SlurmScheduler, job_ids: Sequence[str], expected: int
) -> dict[str, JobStatus]:
    """Poll status() until it reports `expected` entries, all final."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        statuses = scheduler.status(job_ids)
        if len(statuses) == expected and all(s.state.is_final for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {job_ids} not final in time: {statuses}")
        time.sleep(0.5)


def test_array_and_dependent_job_complete(scheduler: SlurmScheduler, workdir: str) -> None:
    array = request(
        workdir,
        *(
            TaskSpec(
                script='echo "task $HPCFLEET_ARRAY_INDEX value $HPCFLEET_ARRAY_VALUE"',
                env={"HPCFLEET_ARRAY_VALUE": lang},
                array_value=lang,
            )
            for lang in ("fi", "cs")
        ),
    )
    array_id = scheduler.submit(array)
    after = request(f"{workdir}/after", TaskSpec(argv=("echo", "after")), after_ok=(array_id,))
    after_id = scheduler.submit(after)

    statuses = wait_final(scheduler, [array_id, after_id], expected=3)
    assert set(statuses) == {f"{array_id}_0", f"{array_id}_1", after_id}
    assert all(s.state is JobState.COMPLETED and s.exit_code == 0 for s in statuses.values())
    # The dependent job started only after both tasks had ended.
    ends = [statuses[f"{array_id}_{i}"].ended for i in (0, 1)]
    started = statuses[after_id].started
    assert started is not None and all(end is not None and started >= end for end in ends)
    assert scheduler.tail(array.stdout_path(0)) == "task 0 value fi\n"
    assert scheduler.tail(array.stdout_path(1)) == "task 1 value cs\n"
    assert scheduler.tail(after.stdout_path(0)) == "after\n"


def test_exit_code_3_is_failed_with_exit_3(scheduler: SlurmScheduler, workdir: str) -> None:
    job = request(workdir, TaskSpec(script="echo oops >&2; exit 3"))
    job_id = scheduler.submit(job)
    statuses = wait_final(scheduler, [job_id], expected=1)
    assert (statuses[job_id].state, statuses[job_id].exit_code) == (JobState.FAILED, 3)
    assert scheduler.tail(job.stderr_path(0)) == "oops\n"


def test_gpu_job_is_accounted_in_gpu_hours(
    scheduler: SlurmScheduler, transport: UserTransport, workdir: str
) -> None:
    job = request(
        workdir,
        TaskSpec(script='echo "$CUDA_VISIBLE_DEVICES"; sleep 2'),
        resources=JobResources(gpus=1, partition="gpu", time_seconds=300),
    )
    job_id = scheduler.submit(job)
    wait_final(scheduler, [job_id], expected=1)
    assert scheduler.tail(job.stdout_path(0)).strip() in ("0", "1")
    # And in sacct itself, once its record is final (it lags slurmctld).
    deadline = time.monotonic() + DEADLINE_S
    while not (
        (recorded := parse_sacct(transport.run(status_command([job_id])).stdout).get(job_id))
        and recorded.state.is_final
    ):
        assert time.monotonic() < deadline, "no final sacct record"
        time.sleep(0.5)
    assert recorded.state is JobState.COMPLETED
    assert recorded.elapsed_seconds is not None and recorded.elapsed_seconds >= 2
    assert recorded.gpu_hours == pytest.approx(recorded.elapsed_seconds / 3600)


def test_cancel_makes_a_running_job_cancelled(scheduler: SlurmScheduler, workdir: str) -> None:
    job_id = scheduler.submit(request(workdir, TaskSpec(argv=("sleep", "300"))))
    deadline = time.monotonic() + DEADLINE_S
    while scheduler.status([job_id]).get(job_id, None) is None or (
        scheduler.status([job_id])[job_id].state is not JobState.RUNNING
    ):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.3)
    scheduler.cancel([job_id])
    statuses = wait_final(scheduler, [job_id], expected=1)
    assert statuses[job_id].state is JobState.CANCELLED
    scheduler.cancel([job_id])  # cancelling again is harmless


def test_find_by_name_finds_a_job_just_submitted_and_later(
    scheduler: SlurmScheduler, workdir: str
) -> None:
    job = request(workdir, TaskSpec(argv=("true",)))
    job_id = scheduler.submit(job)
    # At once (sacct may not know it yet), as after a crash right after sbatch.
    assert [s.job_id for s in scheduler.find_by_name(job.name)] == [job_id]
    wait_final(scheduler, [job_id], expected=1)
    found = scheduler.find_by_name(job.name)
    assert [(s.job_id, s.state) for s in found] == [(job_id, JobState.COMPLETED)]
    assert scheduler.find_by_name(job.name + "-other") == []


def test_hostile_values_cannot_execute_anything(
    scheduler: SlurmScheduler, site: SandboxSite, slurm_sandbox: Sandbox, workdir: str
) -> None:
    canary = f"{site.home}/canary-{uuid.uuid4().hex[:8]}"
    hostile = [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"x; touch {canary}",
        f"' ; touch {canary}; '",
        f'" ; touch {canary}; "',
        f"\\'\\\"; touch {canary} #",
    ]
    # slurmdbd keeps 255 characters of a name; ours are far shorter.
    name = f'it\'s "a" \\ $(touch {canary}) `touch {canary}`; touch {canary} #'
    job = request(
        f"{workdir}/w 'q' \"d\" $(x)",
        *(
            TaskSpec(
                argv=("printf", "%s\\n", value, "${HOME}"), env={"V": value}, array_value=value
            )
            for value in hostile
        ),
        name=name,
        env={"ALL": name},
    )
    job_id = scheduler.submit(job)
    statuses = wait_final(scheduler, [job_id], expected=len(hostile))
    assert all(s.state is JobState.COMPLETED for s in statuses.values())
    # sbatch read the name back exactly (slurmdbd stores '"' as '`').
    assert all(s.name and same_job_name(s.name, name) for s in statuses.values())
    for index, value in enumerate(hostile):
        assert scheduler.tail(job.stdout_path(index)) == f"{value}\n${{HOME}}\n"
    assert not Path(canary).exists()

    # Hostile site settings too: sbatch may refuse them, but nothing may run.
    hostile_site = SETTINGS.model_copy(update={"account": hostile[0], "qos": hostile[2]})
    strict = SlurmScheduler(SITE, scheduler.transport, hostile_site, Environment())
    try:
        other = strict.submit(request(workdir, TaskSpec(argv=("true",))))
        wait_final(strict, [other], expected=1)
    except SchedulerError as error:
        assert not error.transient
    assert not Path(canary).exists()
    assert slurm_sandbox.run_on(site, f"ls {canary}").returncode != 0


def test_invalid_partition_is_a_permanent_scheduler_error(
    scheduler: SlurmScheduler, workdir: str
) -> None:
    job = request(workdir, TaskSpec(argv=("true",)), resources=JobResources(partition="nope"))
    with pytest.raises(SchedulerError, match="Invalid partition") as error:
        scheduler.submit(job)
    assert error.value.transient is False


def test_site_without_accounting_is_served_by_squeue(site: SandboxSite, workdir: str) -> None:
    # The same cluster, seen through a slurm.conf that says there is no slurmdbd.
    with tempfile.TemporaryDirectory(prefix="slurm-noacct-") as tmp:
        conf_dir = Path(tmp)
        conf_dir.chmod(0o755)  # readable by the sandbox user
        for extra in site.slurm_conf.parent.glob("*.conf"):
            shutil.copy(extra, conf_dir / extra.name)
        no_accounting = conf_dir / "slurm.conf"
        no_accounting.write_text(
            re.sub(r"(?m)^AccountingStorage\w*=.*$\n?", "", site.slurm_conf.read_text())
            + "AccountingStorageType=accounting_storage/none\n"
        )
        for conf in conf_dir.iterdir():
            conf.chmod(0o644)
        check_squeue_fallback(site, no_accounting, workdir)


def check_squeue_fallback(site: SandboxSite, no_accounting: Path, workdir: str) -> None:
    transport = UserTransport(site, no_accounting)
    scheduler = SlurmScheduler(SITE, transport, SETTINGS, Environment())
    job_id = scheduler.submit(request(workdir, TaskSpec(script="exit 3")))
    statuses = wait_final(scheduler, [job_id], expected=1)
    assert (statuses[job_id].state, statuses[job_id].exit_code) == (JobState.FAILED, 3)
    assert scheduler.accounting is False
    assert sum("sacct" in c for c in transport.commands) == 1


def test_probes_describe_the_site(scheduler: SlurmScheduler) -> None:
    versions = scheduler.versions()
    assert versions["sbatch"] and versions["sacct"] and versions["squeue"]
    partitions = scheduler.partitions()
    assert partitions["cpu"].default and partitions["gpu"].gpus_per_node == 2
    assert [a.account for a in scheduler.associations()][:1] == ["sandbox"]
    assert scheduler.associations("no-such-account") == []
