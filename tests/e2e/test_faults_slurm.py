"""Fault tests on the real sandbox (issue 4): two SLURM clusters behind real sshd, the
`hpcfleet` CLI as a user runs it, and faults injected from outside: a login node that
goes away, an orchestrator killed with SIGKILL, a requeued job, a time limit, a failing
script, an out-of-memory kill; plus 100 MiB handed between the sites via S3 and relayed.

Every test asks each cluster's `sacct` how often each job name of the run
(`hpcfleet-<run>-<stage>-<attempt>`) was submitted: exactly once, never twice; and where
data moves, compares sha256 on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.layout import StageLayout
from flows.staging import run_checked, stage_input
from registry.partner import Partner
from registry.records import JobRecord
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store
from sites.driver import DriverPool, SiteDriver
from tests.helpers import HPCFLEET, REPO, cli, cli_env, wait_until, write_yaml
from tests.s3server import S3Server, s3_server
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

MIB = 1024 * 1024
OWNERS = {"site-a": "cuni", "site-b": "csc"}
RUN_TIMEOUT = 240  # seconds for one `run launch --wait`; the runs here take 10-100 s


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect database for the module: its first start (migrations) is the slow one."""
    return tmp_path_factory.mktemp("prefect")


@dataclass
class Fleet:
    """One HPCFLEET_HOME with partners cuni and csc and the sandbox's two clusters."""

    sandbox: Sandbox
    env: dict[str, str]
    store: Store
    tmp: Path

    def spec(self, name: str, stages: list[dict[str, Any]]) -> Path:
        return write_yaml(self.tmp / f"{name}.yaml", {"name": name, "stages": stages})

    def launch(self, spec: Path) -> subprocess.CompletedProcess[str]:
        return cli(self.env, "run", "launch", str(spec), "--wait", timeout=RUN_TIMEOUT)

    def start(self, spec: Path) -> subprocess.Popen[bytes]:
        """`run launch --wait` in the background, in its own process group."""
        log = (self.tmp / f"{spec.stem}.log").open("wb")
        return subprocess.Popen(
            [*HPCFLEET, "run", "launch", str(spec), "--wait"], env=self.env, cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, spec: Path) -> str:
        return (self.tmp / f"{spec.stem}.log").read_text(errors="replace")

    def only_run(self) -> str:
        [run] = self.store.list_runs()
        return run.run_id

    def jobs(self, run_id: str, stage: str) -> list[JobRecord]:
        return self.store.jobs(run_id, stage)

    def wait_for_job(self, stage: str, state: JobState, timeout: float = 120) -> JobRecord:
        """The first job of `stage` (of the only run) once it is in `state`."""
        found: list[JobRecord] = []

        def reached() -> bool:
            runs = self.store.list_runs()
            found[:] = [j for j in self.store.jobs(runs[0].run_id, stage)
                        if j.state is state] if runs else []
            return bool(found)

        wait_until(reached, timeout=timeout, interval=0.5)
        return found[0]

    def outputs(self, site: str, run_id: str, stage: str) -> Path:
        """The stage's outputs dir on the site (the sandbox's sites are on this machine)."""
        return self.sandbox.site(site).home / "hpcfleet" / "runs" / run_id / stage / "outputs"

    def inputs(self, site: str, run_id: str, stage: str, needed: str) -> Path:
        return self.outputs(site, run_id, stage).parent / "inputs" / needed


@pytest.fixture
def fleet(slurm_sandbox: Sandbox, tmp_path: Path, prefect_home: Path) -> Iterator[Fleet]:
    home = tmp_path / "home"
    env = cli_env(home)
    env.update(PREFECT_HOME=str(prefect_home), HPCFLEET_PARTNER="cuni")
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    store.put_partner(Partner(id="cuni", name="Charles University", country="CZ"))
    store.put_partner(Partner(id="csc", name="CSC", country="FI"))
    for name, owner in OWNERS.items():
        # Host keys pinned from the sandbox's own files: no `site trust` round trip.
        store.put_site(Site.model_validate(slurm_site_document(slurm_sandbox.site(name), owner)),
                       owner)
    yield Fleet(slurm_sandbox, env, store, tmp_path)
    store.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def submissions(sandbox: Sandbox, site: str, run_id: str) -> dict[str, set[str]]:
    """{job name: distinct base job ids} of every job of the run sacct knows on `site`.

    Array tasks (123_0, 123_1) and a requeued job's records share one base id: that is
    one submission.
    """
    result = sandbox.run_on(site, [
        "sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
        "--starttime=now-1days", "--format=JobID,JobName%200"])
    assert result.returncode == 0, result.stderr
    found: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        job_id, _, name = line.partition("|")
        if name.startswith(f"hpcfleet-{run_id}-"):
            found.setdefault(name, set()).add(job_id.split("_")[0])
    return found


def assert_submitted_once(sandbox: Sandbox, run_id: str, expected: dict[str, list[str]]) -> None:
    """sacct on both clusters shows exactly the expected job names (site -> "stage-attempt"),
    each submitted exactly once. Waits out sacct's few seconds of lag behind slurmctld."""
    want = {site: {f"hpcfleet-{run_id}-{name}" for name in names}
            for site, names in expected.items()}
    seen: dict[str, dict[str, set[str]]] = {}

    def complete() -> bool:
        seen.update({site: submissions(sandbox, site, run_id) for site in OWNERS})
        return all(set(seen[site]) == want.get(site, set()) for site in OWNERS)

    try:
        wait_until(complete, timeout=20, interval=1)
    except AssertionError:
        pytest.fail(f"sacct shows {seen}, expected {want}")
    for site in OWNERS:
        for name, ids in seen[site].items():
            assert len(ids) == 1, f"{name} was submitted {len(ids)} times on {site}: {ids}"


def show(fleet: Fleet, run_id: str) -> dict[str, Any]:
    shown = cli(fleet.env, "run", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


# -- a login node goes away --------------------------------------------------------------


def test_run_survives_site_b_sshd_stopped_while_its_job_runs(
    fleet: Fleet, slurm_faults: Sandbox
) -> None:
    spec = fleet.spec("sshd-outage", [
        {"name": "produce", "site": "site-a", "outputs": ["data.bin"],
         "script": 'head -c 1048576 /dev/urandom > "$HPCFLEET_OUTPUTS/data.bin"'},
        {"name": "consume", "site": "site-b", "needs": ["produce"], "outputs": ["sha"],
         "script": 'sleep 20; sha256sum < "$HPCFLEET_INPUTS/produce/data.bin" | cut -c1-64 '
                   '> "$HPCFLEET_OUTPUTS/sha"'},
    ])
    orchestrator = fleet.start(spec)
    try:
        fleet.wait_for_job("consume", JobState.RUNNING)
        slurm_faults.stop("site-b", "sshd")  # the login node and every open session
        assert slurm_faults.ssh("site-b", "true", connect_timeout=2).returncode == 255
        time.sleep(10)
        slurm_faults.start("site-b", "sshd")
        assert orchestrator.wait(timeout=RUN_TIMEOUT) == 0, fleet.log(spec)
    finally:
        if orchestrator.poll() is None:
            os.killpg(orchestrator.pid, signal.SIGKILL)
            orchestrator.wait()

    run_id = fleet.only_run()
    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["produce-1"], "site-b": ["consume-1"]})
    produced = sha256(fleet.outputs("site-a", run_id, "produce") / "data.bin")
    assert sha256(fleet.inputs("site-b", run_id, "consume", "produce") / "data.bin") == produced
    assert (fleet.outputs("site-b", run_id, "consume") / "sha").read_text().strip() == produced
