"""What hpcfleet creates on a SLURM site is owner-only (umask 077) unless the site's
`environment.umask` says otherwise: checked over real SSH on the sandbox, with `stat`.

A shared /scratch is readable by every member of a project group; a job's directories,
its output files and what it writes must not be.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.site import Environment, Partition, Site, SlurmSettings, SshSettings
from registry.states import JobState
from sites.driver import DriverPool
from sites.probe import probe_site
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.slurm.scheduler import SlurmScheduler
from sites.ssh.transport import ConnectionPool, SshTransport
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

SETTINGS = SlurmSettings(account="sandbox", partitions=[Partition(name="cpu", default=True)])
DEADLINE_S = 90.0


@pytest.fixture
def site(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site("site-a")


@pytest.fixture
def transport(site: SandboxSite) -> Iterator[SshTransport]:
    pool = ConnectionPool()
    ssh = SshSettings(
        host=site.host,
        port=site.port,
        user=site.user,
        identity_file=str(site.key_path),
        host_key=site.host_key,
    )
    with SshTransport(site.name, ssh, pool=pool) as opened:
        yield opened
    pool.close_all()


@pytest.fixture
def root(site: SandboxSite, slurm_sandbox: Sandbox) -> Iterator[str]:
    path = f"{site.home}/permissions-test/{uuid.uuid4().hex[:8]}"
    yield path
    slurm_sandbox.run_on(site, ["rm", "-rf", "--", path])


def modes(sandbox: Sandbox, site: SandboxSite, *paths: str) -> dict[str, str]:
    """{path: octal mode}, read with `stat` over a real ssh login to the site."""
    done = sandbox.ssh(site, ["stat", "-c", "%a %n", "--", *paths])
    assert done.returncode == 0, done.stderr
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in done.stdout.splitlines()}


def run_job(scheduler: SlurmScheduler, root: str) -> JobRequest:
    """Submit a job that writes a file and prints a line; wait until it is COMPLETED."""
    job = JobRequest(
        name=f"hpcfleet-perm-{uuid.uuid4().hex[:8]}-s-1",
        workdir=f"{root}/run/work",
        log_dir=f"{root}/run/logs",
        tasks=(TaskSpec(script="echo result > made.txt; echo done"),),
        resources=JobResources(time_seconds=120),
    )
    job_id = scheduler.submit(job)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status = scheduler.status([job_id]).get(job_id)
        if status is not None and status.state.is_final:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} not final in time: {status}")
        time.sleep(0.5)
    assert status.state is JobState.COMPLETED, status
    return job


def test_job_dirs_and_outputs_are_owner_only_on_the_site(
    transport: SshTransport, slurm_sandbox: Sandbox, site: SandboxSite, root: str
) -> None:
    # The login shell's umask on the sandbox is 022, as on most sites.
    assert slurm_sandbox.ssh(site, "umask").stdout.strip() == "0022"
    job = run_job(SlurmScheduler(site.name, transport, SETTINGS, Environment()), root)
    found = modes(
        slurm_sandbox,
        site,
        f"{root}/run",
        job.workdir,
        job.log_dir,
        job.stdout_path(0),
        job.stderr_path(0),
        f"{job.workdir}/made.txt",
    )
    assert found == {
        f"{root}/run": "700",
        job.workdir: "700",
        job.log_dir: "700",
        job.stdout_path(0): "600",
        job.stderr_path(0): "600",
        f"{job.workdir}/made.txt": "600",
    }


def test_a_site_umask_opens_them_to_the_group(
    transport: SshTransport, slurm_sandbox: Sandbox, site: SandboxSite, root: str
) -> None:
    environment = Environment(umask="027")
    job = run_job(SlurmScheduler(site.name, transport, SETTINGS, environment), root)
    found = modes(slurm_sandbox, site, job.log_dir, job.stdout_path(0), f"{job.workdir}/made.txt")
    assert found == {
        job.log_dir: "750",
        job.stdout_path(0): "640",
        f"{job.workdir}/made.txt": "640",
    }


def test_site_check_creates_a_missing_work_dir_owner_only(
    slurm_sandbox: Sandbox, site: SandboxSite, root: str, tmp_path: Path
) -> None:
    document = slurm_site_document(site, "cuni", environment={"workdir": f"{root}/hpcfleet"})
    pool = DriverPool(tmp_path)
    try:
        result = probe_site(Site.model_validate(document), pool)
    finally:
        pool.close()
    assert result.reachable, result.as_dict()
    assert modes(slurm_sandbox, site, root, f"{root}/hpcfleet") == {
        root: "700",
        f"{root}/hpcfleet": "700",
    }
