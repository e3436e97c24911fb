"""The launcher on the real SLURM sandbox: srun fans a task out (distinct ranks), a
container runs inside srun once per task, and Lmod's `module` works in a batch job.

Fan-out is shown over tasks on one node and over the two nodes of site-a's partition
`multi` (two slurmd of the sandbox). There is no apptainer package here: a fake `apptainer` (put on PATH by the site's
`setup:` line) records its argv and environment, then execs the command after the image.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.site import Site
from sites.driver import DriverPool, SiteDriver
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec
from tests.helpers import wait_until
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm
DEADLINE_S = 60

RANK_PROBE = (
    'mkdir -p ranks && echo "rank=$RANK local=$LOCAL_RANK node=$NODE_RANK world=$WORLD_SIZE '
    'addr=$MASTER_ADDR port=$MASTER_PORT host=$SLURMD_NODENAME module=${HPCFLEET_PROBE:-}" '
    '> "ranks/$RANK"'
)
# Stands in for apptainer: logs one line per call, then runs what follows the image.
FAKE_APPTAINER = """#!/bin/bash
echo "step=${SLURM_STEP_ID:-none} rank=${RANK:-none} argv=$*" >> "$FAKE_APPTAINER_LOG"
while [ $# -gt 0 ] && [[ $1 != *.sif ]]; do shift; done
shift
exec "$@"
"""
LMOD_INIT = "/etc/profile.d/lmod.sh"  # Debian's lmod package
MODULEFILE = 'setenv("HPCFLEET_PROBE", "loaded")\n'


@pytest.fixture
def driver(slurm_sandbox: Sandbox, tmp_path: Any) -> Iterator[SiteDriver]:
    pool = DriverPool(tmp_path)
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    try:
        yield pool.get(site)
    finally:
        pool.close()


def site_with(driver: SiteDriver, environment: dict[str, Any]) -> SiteDriver:
    """The same sandbox site with another `environment:` section (same connection)."""
    document = driver.site.model_dump(mode="json")
    document["environment"] = {"workdir": "hpcfleet", **environment}
    site = Site.model_validate(document)
    from sites.slurm.scheduler import SlurmScheduler

    assert site.slurm is not None
    scheduler = SlurmScheduler(site.name, driver.transport, site.slurm, site.environment)
    return SiteDriver(site, driver.transport, scheduler, driver.workdir)


def run_job(driver: SiteDriver, workdir: str, **fields: Any) -> JobStatus:
    request = JobRequest(
        name=f"hpcfleet-{uuid.uuid4().hex[:8]}-launch-1",
        workdir=workdir,
        log_dir=f"{workdir}/logs",
        tasks=(TaskSpec(script=RANK_PROBE),),
        **fields,
    )
    run(driver, f"mkdir -p {shlex.quote(request.log_dir)}")
    job_id = driver.scheduler.submit(request)
    seen: dict[str, JobStatus] = {}

    def final() -> bool:
        seen.update(driver.scheduler.status([job_id]))
        return job_id in seen and seen[job_id].state.is_final

    wait_until(final, timeout=DEADLINE_S, interval=0.5)
    return seen[job_id]


def run(driver: SiteDriver, command: str) -> str:
    result = driver.transport.run(command)
    assert result.ok, result.stderr
    return result.stdout


def read(driver: SiteDriver, path: str) -> str:
    return run(driver, f"cat {shlex.quote(path)}")


def ranks(driver: SiteDriver, workdir: str) -> list[dict[str, str]]:
    """One dict per task of what RANK_PROBE wrote."""
    text = run(driver, f"cat {shlex.quote(workdir)}/ranks/*")
    return [dict(field.split("=", 1) for field in line.split(" ")) for line in text.splitlines()]


def fresh_dir(driver: SiteDriver) -> str:
    path = f"{driver.workdir}/launcher-test/{uuid.uuid4().hex[:8]}"
    run(driver, f"mkdir -p {shlex.quote(path)}")
    return path


def test_four_tasks_on_one_node_see_distinct_ranks(driver: SiteDriver) -> None:
    workdir = fresh_dir(driver)
    status = run_job(driver, workdir, resources=JobResources(tasks_per_node=4, time_seconds=300))
    assert status.state.value == "COMPLETED", read(driver, f"{workdir}/logs/0.err")
    seen = ranks(driver, workdir)
    assert sorted(r["rank"] for r in seen) == ["0", "1", "2", "3"]
    assert sorted(r["local"] for r in seen) == ["0", "1", "2", "3"]
    assert {r["world"] for r in seen} == {"4"}
    assert {r["node"] for r in seen} == {"0"}
    # MASTER_ADDR is the allocation's first node; every task agrees on it and the port.
    assert {r["addr"] for r in seen} == {r["host"] for r in seen} and seen[0]["addr"]
    assert len({r["port"] for r in seen}) == 1 and 20000 <= int(seen[0]["port"]) < 32000


def test_two_nodes_two_tasks_each_see_four_ranks_on_two_hosts(
    driver: SiteDriver, slurm_sandbox: Sandbox
) -> None:
    nodes = slurm_sandbox.site("site-a").nodes
    if len(nodes) < 2:
        pytest.skip("the sandbox's site-a has one node (tests/sandbox/hpc-sandbox up renews it)")
    workdir = fresh_dir(driver)
    resources = JobResources(nodes=2, tasks_per_node=2, time_seconds=300, partition="multi")
    status = run_job(driver, workdir, resources=resources)
    assert status.state.value == "COMPLETED", read(driver, f"{workdir}/logs/0.err")
    seen = ranks(driver, workdir)
    assert sorted(r["rank"] for r in seen) == ["0", "1", "2", "3"]
    assert {r["world"] for r in seen} == {"4"}
    by_host: dict[str, list[str]] = {}
    for r in seen:
        by_host.setdefault(r["host"], []).append(r["local"])
    assert sorted(by_host) == sorted(nodes)  # two tasks on each node, local ranks 0 and 1
    assert all(sorted(local) == ["0", "1"] for local in by_host.values())
    assert sorted({r["node"] for r in seen}) == ["0", "1"]
    assert {r["addr"] for r in seen} == {min(nodes)}  # the allocation's first node


def test_container_runs_inside_srun_once_per_task_with_lmod_modules(driver: SiteDriver) -> None:
    if not Path(LMOD_INIT).exists():
        pytest.skip(f"needs Lmod on the sandbox's node ({LMOD_INIT}); .ci/run installs `lmod`")
    # The premise: a command over a non-login ssh exec (as sbatch is sent) has no `module`.
    assert not driver.transport.run("type module").ok
    base = fresh_dir(driver)
    tools = f"{base}/bin"
    modules = f"{base}/modulefiles"
    log = f"{base}/apptainer.log"
    run(
        driver,
        f"mkdir -p {shlex.quote(tools)} {shlex.quote(modules)}"
        f" && printf %s {shlex.quote(FAKE_APPTAINER)} > {shlex.quote(tools)}/apptainer"
        f" && chmod +x {shlex.quote(tools)}/apptainer"
        f" && printf %s {shlex.quote(MODULEFILE)} > {shlex.quote(modules)}/hpcfleet-probe.lua",
    )
    site = site_with(
        driver,
        {
            # The site owner's lines: a tool directory, and a module tree for Lmod.
            "setup": [
                f"export PATH={shlex.quote(tools)}:$PATH",
                f"module use {shlex.quote(modules)}",
            ],
            "modules": ["hpcfleet-probe"],
            "env": {"FAKE_APPTAINER_LOG": log},
            "container": {
                "image": "/images/train.sif",
                "options": ["--rocm"],
                "binds": ["/pfs", "/scratch"],
            },
        },
    )
    workdir = f"{base}/work"
    run(driver, f"mkdir -p {shlex.quote(workdir)}")
    status = run_job(site, workdir, resources=JobResources(tasks_per_node=2, time_seconds=300))
    assert status.state.value == "COMPLETED", read(driver, f"{workdir}/logs/0.err")
    calls = read(driver, log).splitlines()
    assert len(calls) == 2  # one container per task
    for call in calls:
        # Inside a job step (srun outside), the rank already set, the order as documented.
        assert call.startswith("step=0 rank=")
        assert call.endswith(
            "argv=exec --rocm --bind /pfs,/scratch /images/train.sif bash -c " + RANK_PROBE
        )
    seen = ranks(driver, workdir)
    assert sorted(r["rank"] for r in seen) == ["0", "1"]
    assert {r["module"] for r in seen} == {"loaded"}  # `module` existed, setup ran first
