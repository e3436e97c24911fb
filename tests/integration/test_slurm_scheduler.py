"""SlurmScheduler against the real SLURM sandbox (tests/sandbox), over SSH to site-b:
what only SLURM does (GPU accounting, hostile site settings, partitions, sites without
accounting, probes). What every scheduler does is in test_scheduler_contract.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import tempfile
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
from sites.ssh.transport import ConnectionPool, SshTransport
from sites.transport import CommandResult
from tests.doubles import Call, RecordingTransport
from tests.helpers import wait_until
from tests.sandbox.documents import ssh_settings
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = pytest.mark.slurm

SITE = "site-b"
# sacct lags slurmctld by a few seconds; this only bounds a hung sandbox.
DEADLINE_S = 90.0
SETTINGS = SlurmSettings(
    account="sandbox",
    partitions=[Partition(name="cpu", default=True), Partition(name="gpu", gpus_per_node=2)],
)


@pytest.fixture
def site(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site(SITE)


@pytest.fixture(scope="module")
def ssh_pool(slurm_sandbox: Sandbox) -> Iterator[ConnectionPool]:
    """One login for the whole module: `keeper` holds a share of the connection."""
    site = slurm_sandbox.site(SITE)
    pool = ConnectionPool()
    keeper = SshTransport(site.name, ssh_settings(site), pool=pool)
    yield pool
    keeper.close()
    pool.close_all()


@pytest.fixture
def transport(site: SandboxSite, ssh_pool: ConnectionPool) -> Iterator[SshTransport]:
    with SshTransport(site.name, ssh_settings(site), pool=ssh_pool) as opened:
        yield opened


@pytest.fixture
def scheduler(transport: SshTransport) -> SlurmScheduler:
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
    """Statuses once status() reports `expected` entries, all final."""
    seen: dict[str, JobStatus] = {}

    def final() -> bool:
        seen.clear()
        seen.update(scheduler.status(job_ids))
        return len(seen) == expected and all(s.state.is_final for s in seen.values())

    wait_until(final, timeout=DEADLINE_S)
    return seen


def test_gpu_job_is_accounted_in_gpu_hours(
    scheduler: SlurmScheduler, transport: SshTransport, workdir: str
) -> None:
    job = request(
        workdir,
        TaskSpec(script='echo "$CUDA_VISIBLE_DEVICES"; sleep 1'),
        resources=JobResources(gpus=1, partition="gpu", time_seconds=300),
    )
    job_id = scheduler.submit(job)
    wait_final(scheduler, [job_id], expected=1)
    assert scheduler.tail(job.stdout_path(0)).strip() in ("0", "1")
    # And in sacct itself, once its record is final (it lags slurmctld).
    records: dict[str, JobStatus] = {}

    def recorded_final() -> bool:
        records.update(parse_sacct(transport.run(status_command([job_id])).stdout))
        return job_id in records and records[job_id].state.is_final

    wait_until(recorded_final, timeout=DEADLINE_S)
    recorded = records[job_id]
    assert recorded.state is JobState.COMPLETED
    assert recorded.elapsed_seconds is not None and recorded.elapsed_seconds >= 1
    assert recorded.gpu_hours == pytest.approx(recorded.elapsed_seconds / 3600)


def test_hostile_names_and_site_settings_cannot_execute_anything(
    scheduler: SlurmScheduler, site: SandboxSite, slurm_sandbox: Sandbox, workdir: str
) -> None:
    # sbatch's own #SBATCH parser reads the name: backslashes, both quotes, a comment.
    canary = f"{site.home}/canary-{uuid.uuid4().hex[:8]}"
    name = f'it\'s "a" \\ \\\'\\" $(touch {canary}) `touch {canary}`; touch {canary} #'
    job = request(workdir, TaskSpec(argv=("printf", "%s\\n", name)), name=name)
    job_id = scheduler.submit(job)
    # Hostile site settings: sbatch may refuse them, but nothing may run.
    hostile_site = SETTINGS.model_copy(
        update={"account": f"$(touch {canary})", "qos": f"x; touch {canary}"}
    )
    strict = SlurmScheduler(SITE, scheduler.transport, hostile_site, Environment())
    job_ids = [job_id]
    try:
        job_ids.append(strict.submit(request(f"{workdir}/strict", TaskSpec(argv=("true",)))))
    except SchedulerError as refused:
        assert not refused.transient

    statuses = wait_final(scheduler, job_ids, expected=len(job_ids))
    assert statuses[job_id].state is JobState.COMPLETED
    # sbatch read the name back exactly (slurmdbd stores '"' as '`').
    assert same_job_name(statuses[job_id].name or "", name)
    assert scheduler.tail(job.stdout_path(0)) == f"{name}\n"
    assert not Path(canary).exists()
    assert slurm_sandbox.run_on(site, ["ls", canary]).returncode != 0


def test_invalid_partition_is_a_permanent_scheduler_error(
    scheduler: SlurmScheduler, workdir: str
) -> None:
    job = request(workdir, TaskSpec(argv=("true",)), resources=JobResources(partition="nope"))
    with pytest.raises(SchedulerError, match="Invalid partition") as error:
        scheduler.submit(job)
    assert error.value.transient is False


def test_site_without_accounting_is_served_by_squeue(
    site: SandboxSite, transport: SshTransport, workdir: str
) -> None:
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
        check_squeue_fallback(transport, no_accounting, workdir)


def check_squeue_fallback(ssh: SshTransport, no_accounting: Path, workdir: str) -> None:
    def with_conf(call: Call) -> CommandResult:
        command = f"export SLURM_CONF={shlex.quote(str(no_accounting))}; {call.command}"
        return ssh.run(command, stdin=call.stdin, timeout=call.timeout)

    transport = RecordingTransport({"": with_conf}, site=SITE)  # "": every command
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
