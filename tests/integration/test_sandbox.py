"""The SLURM + sshd sandbox behaves like two real, independent HPC sites over ssh."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid

import pytest

from tests.sandbox.sandbox import SITE_NAMES, Sandbox

pytestmark = pytest.mark.slurm

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
# sacct lags slurmctld by up to a few seconds; this only bounds a hung sandbox.
SACCT_WAIT_S = 60.0


def ssh_ok(sandbox: Sandbox, site: str, command: str) -> str:
    result = sandbox.ssh(site, command)
    assert result.returncode == 0, f"{site}: {command!r} failed: {result.stderr}"
    return result.stdout


def submit(sandbox: Sandbox, site: str, name: str, script: str, *options: str) -> str:
    """sbatch over ssh; returns the job id."""
    argv = ["sbatch", "--parsable", "-J", name, *options, "--wrap", script]
    return ssh_ok(sandbox, site, shlex.join(argv)).strip().split(";")[0]


def wait_for_final_record(sandbox: Sandbox, site: str, job_id: str, name: str) -> dict[str, str]:
    """Poll sacct over ssh until the job's full record is there and final.

    A quick job's first record can already say COMPLETED while still carrying the
    placeholder name "allocation" and no partition; the full one follows seconds later.
    """
    fields = ("JobName", "State", "Partition", "AllocTRES")
    command = shlex.join(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", ",".join(fields)])
    deadline = time.monotonic() + SACCT_WAIT_S
    while True:
        lines = ssh_ok(sandbox, site, command).splitlines()
        if lines:
            record = dict(zip(fields, lines[0].split("|"), strict=True))
            if record["State"] in FINAL_STATES and record["JobName"] == name:
                return record
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} on {site} has no full final sacct record: {lines}")
        time.sleep(0.3)


def test_each_site_has_its_own_login_home_and_cluster(slurm_sandbox: Sandbox) -> None:
    for name in SITE_NAMES:
        site = slurm_sandbox.site(name)
        alias = subprocess.run(
            ["ssh", "-F", str(site.ssh_config), name, 'echo "$HPC_SITE"; pwd; scontrol ping'],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert alias.returncode == 0, alias.stderr
        site_name, cwd, ping = alias.stdout.splitlines()[:3]
        assert (site_name, cwd) == (name, str(site.home))
        assert "is UP" in ping


def test_job_completes_and_is_accounted_on_its_own_cluster_only(
    slurm_sandbox: Sandbox,
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {site: f"sbx-{site}-{tag}" for site in SITE_NAMES}
    job_ids = {
        site: submit(slurm_sandbox, site, names[site], 'echo "ran on $HPC_SITE"')
        for site in SITE_NAMES
    }

    for site in SITE_NAMES:
        record = wait_for_final_record(slurm_sandbox, site, job_ids[site], names[site])
        assert (record["State"], record["Partition"]) == ("COMPLETED", "cpu")
        output = ssh_ok(slurm_sandbox, site, f"cat slurm-{job_ids[site]}.out")
        assert output.strip() == f"ran on {site}"

    # Both clusters number jobs from 1: an id alone must not leak into the other site.
    site_b_view = ssh_ok(
        slurm_sandbox, "site-b",
        shlex.join(["sacct", "-n", "-P", "-X", "-S", "now-1hours", "-o", "JobName"]),
    )  # fmt: skip
    site_b_by_id = ssh_ok(
        slurm_sandbox, "site-b",
        shlex.join(["sacct", "-n", "-P", "-X", "-j", job_ids["site-a"], "-o", "JobName"]),
    )  # fmt: skip
    assert names["site-b"] in site_b_view.split()
    assert names["site-a"] not in site_b_view.split()
    assert names["site-a"] not in site_b_by_id.split()


@pytest.mark.parametrize("site", SITE_NAMES)
def test_gpu_job_sees_its_allocated_device(slurm_sandbox: Sandbox, site: str) -> None:
    job_id = submit(
        slurm_sandbox, site, "sbx-gpu", 'echo "CVD=$CUDA_VISIBLE_DEVICES"',
        "-p", "gpu", "--gres=gpu:1",
    )  # fmt: skip

    record = wait_for_final_record(slurm_sandbox, site, job_id, "sbx-gpu")

    assert record["State"] == "COMPLETED"
    assert "gres/gpu=1" in record["AllocTRES"].split(",")
    assert ssh_ok(slurm_sandbox, site, f"cat slurm-{job_id}.out").strip() == "CVD=0"


def test_rejecting_partition_cuts_off_one_site_until_healed(slurm_faults: Sandbox) -> None:
    slurm_faults.partition("site-a", "reject")

    cut = slurm_faults.ssh("site-a", "true", timeout=30)
    other = slurm_faults.ssh("site-b", "echo reachable")

    assert cut.returncode == 255
    assert "Connection refused" in cut.stderr
    assert other.stdout.strip() == "reachable"

    slurm_faults.heal("site-a")

    assert ssh_ok(slurm_faults, "site-a", "echo back").strip() == "back"


def test_stopped_sshd_refuses_logins_until_started(slurm_faults: Sandbox) -> None:
    slurm_faults.stop("site-b", "sshd")

    down = slurm_faults.ssh("site-b", "true", timeout=30)

    assert down.returncode == 255
    assert "Connection refused" in down.stderr
    assert ssh_ok(slurm_faults, "site-a", "echo up").strip() == "up"

    slurm_faults.start("site-b", "sshd")

    assert ssh_ok(slurm_faults, "site-b", "echo back").strip() == "back"
