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


# -- the orchestrator is killed ----------------------------------------------------------


def test_resume_after_sigkill_submits_every_job_exactly_once(fleet: Fleet) -> None:
    write = 'sleep 8; echo "$HPCFLEET_ARRAY_VALUE" > "$HPCFLEET_OUTPUTS/out-$HPCFLEET_ARRAY_VALUE"'
    spec = fleet.spec("killed", [
        {"name": "slow", "site": "site-a", "array": {"n": [1, 2]}, "script": write,
         "outputs": ["out-1", "out-2"]},
        # Same site: chained, submitted with afterok while `slow` still runs.
        {"name": "chained", "site": "site-a", "needs": ["slow"],
         "script": 'cat "$HPCFLEET_INPUTS/slow/out-1" > "$HPCFLEET_OUTPUTS/copy"'},
        # Other site: submitted only once `slow` has completed, i.e. after the kill.
        {"name": "remote", "site": "site-b", "needs": ["slow"], "outputs": ["sum"],
         "script": 'cat "$HPCFLEET_INPUTS/slow/out-1" "$HPCFLEET_INPUTS/slow/out-2" '
                   '> "$HPCFLEET_OUTPUTS/sum"'},
    ])
    orchestrator = fleet.start(spec)
    try:
        fleet.wait_for_job("slow", JobState.RUNNING)
        run_id = fleet.only_run()
        wait_until(lambda: any(j.scheduler_id for j in fleet.jobs(run_id, "chained")), timeout=30)
    finally:
        os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()
    assert fleet.store.get_run(run_id).state is RunState.RUNNING
    assert fleet.jobs(run_id, "remote") == []  # not submitted when the orchestrator died

    resumed = cli(fleet.env, "run", "resume", run_id, "--force", timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    for stage, count in {"slow": 2, "chained": 1, "remote": 1}.items():
        jobs = fleet.jobs(run_id, stage)
        assert len(jobs) == count and {j.attempt for j in jobs} == {1}, jobs
        assert all(j.state is JobState.COMPLETED for j in jobs), jobs
    assert_submitted_once(fleet.sandbox, run_id, {
        "site-a": ["slow-1", "chained-1"], "site-b": ["remote-1"]})
    for name in ("out-1", "out-2"):
        assert sha256(fleet.inputs("site-b", run_id, "remote", "slow") / name) == \
            sha256(fleet.outputs("site-a", run_id, "slow") / name)
    assert (fleet.outputs("site-b", run_id, "remote") / "sum").read_text() == "1\n2\n"


# -- SLURM itself interrupts a job -------------------------------------------------------


def test_requeued_job_completes_as_the_same_submission(fleet: Fleet) -> None:
    spec = fleet.spec("requeued", [
        {"name": "steady", "site": "site-a", "outputs": ["result"],
         "script": 'echo started >> "$HPCFLEET_OUTPUTS/starts"; sleep 6; '
                   'echo done > "$HPCFLEET_OUTPUTS/result"'},
    ])
    orchestrator = fleet.start(spec)
    try:
        job = fleet.wait_for_job("steady", JobState.RUNNING)
        job_id = job.scheduler_id or ""
        requeued = fleet.sandbox.run_on("site-a", ["scontrol", "requeue", job_id])
        assert requeued.returncode == 0, requeued.stderr

        def pending() -> bool:
            state = fleet.sandbox.run_on("site-a", ["squeue", "-h", "-j", job_id, "-o", "%T"])
            return state.stdout.strip() == "PENDING"

        # A requeued job waits ~120 s for its BeginTime; start it now.
        wait_until(pending, timeout=30, interval=0.5)
        started = fleet.sandbox.run_on(
            "site-a", ["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
        assert started.returncode == 0, started.stderr
        assert orchestrator.wait(timeout=RUN_TIMEOUT) == 0, fleet.log(spec)
    finally:
        if orchestrator.poll() is None:
            os.killpg(orchestrator.pid, signal.SIGKILL)
            orchestrator.wait()

    # SLURM reports the requeued job as REQUEUED, then PENDING (both our PENDING: it runs
    # again under the same id), then RUNNING: none of them final, so the engine keeps
    # waiting on the same job and never submits another attempt.
    run_id = fleet.only_run()
    [record] = fleet.jobs(run_id, "steady")
    assert record.state is JobState.COMPLETED and record.scheduler_id == job_id
    assert record.attempt == 1
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["steady-1"]})
    history = fleet.sandbox.run_on("site-a", [
        "sacct", "-n", "-P", "-X", "--duplicates", "-j", job_id, "-o", "State"])
    assert history.stdout.split() == ["REQUEUED", "COMPLETED"]
    outputs = fleet.outputs("site-a", run_id, "steady")
    assert (outputs / "starts").read_text() == "started\nstarted\n"  # it really ran twice
    assert (outputs / "result").read_text() == "done\n"


def test_resumable_job_past_its_time_limit_resumes_from_its_checkpoint(fleet: Fleet) -> None:
    # A minute is SLURM's smallest time limit; it enforces it within ~30 s after.
    script = """
if [ -f "$HPCFLEET_OUTPUTS/checkpoint" ]; then
    echo "resumed from $(cat "$HPCFLEET_OUTPUTS/checkpoint")" > "$HPCFLEET_OUTPUTS/result"
else
    echo "attempt $HPCFLEET_ATTEMPT" > "$HPCFLEET_OUTPUTS/checkpoint"
    sleep 600
fi
"""
    spec = fleet.spec("timeout", [
        {"name": "long", "site": "site-a", "resources": {"time": "00:01:00"},
         "resumable": True, "outputs": ["result"], "script": script},
    ])
    launched = fleet.launch(spec)
    assert launched.returncode == 0, launched.stdout + launched.stderr

    run_id = fleet.only_run()
    jobs = fleet.jobs(run_id, "long")
    assert [(j.attempt, j.state) for j in jobs] == [
        (1, JobState.TIMEOUT), (2, JobState.COMPLETED)]
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["long-1", "long-2"]})
    result = fleet.outputs("site-a", run_id, "long") / "result"
    assert result.read_text() == "resumed from attempt 1\n"


def test_failing_job_is_retried_then_fails_the_run_with_its_last_words(fleet: Fleet) -> None:
    spec = fleet.spec("failing", [
        {"name": "flaky", "site": "site-a", "retries": 1,
         "script": 'echo "attempt $HPCFLEET_ATTEMPT: cannot open shard 7" >&2; exit 1'},
        {"name": "downstream", "site": "site-b", "needs": ["flaky"], "command": ["true"]},
    ])
    launched = fleet.launch(spec)
    assert launched.returncode == 1, launched.stdout + launched.stderr

    run_id = fleet.only_run()
    shown = show(fleet, run_id)
    stages = {s["name"]: s for s in shown["stages"]}
    assert shown["state"] == "FAILED"
    assert stages["flaky"]["state"] == "FAILED"
    assert "after 2 attempts" in stages["flaky"]["reason"]
    assert stages["flaky"]["reason"].endswith("attempt 2: cannot open shard 7")
    assert [(j["attempt"], j["state"], j["exit_code"]) for j in stages["flaky"]["jobs"]] == [
        (1, "FAILED", 1), (2, "FAILED", 1)]
    assert stages["downstream"]["state"] == "CANCELLED"
    assert stages["downstream"]["reason"] == "skipped: needs flaky, which failed"
    assert stages["downstream"]["jobs"] == []
    assert "cannot open shard 7" in shown["reason"]
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["flaky-1", "flaky-2"]})


def test_job_killed_for_memory_fails_with_a_clear_reason(fleet: Fleet) -> None:
    spec = fleet.spec("hungry", [
        {"name": "hungry", "site": "site-a", "resources": {"mem": "50M"}, "retries": 1,
         "script": 'python3 -c "x = bytearray(300 * 1024 * 1024); import time; time.sleep(5)"'},
    ])
    launched = fleet.launch(spec)
    assert launched.returncode == 1, launched.stdout + launched.stderr

    run_id = fleet.only_run()
    [stage] = show(fleet, run_id)["stages"]
    assert stage["state"] == "FAILED"
    assert "hungry on site-a ran out of memory; raise resources.mem" in stage["reason"]
    # Memory is not a failure `retries` covers: the same job would be killed again.
    [job] = stage["jobs"]
    assert job["state"] == "OUT_OF_MEMORY"
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["hungry-1"]})
    accounted = fleet.sandbox.run_on("site-a", [
        "sacct", "-n", "-P", "-X", "-j", job["scheduler_id"], "-o", "State,ReqMem"])
    assert accounted.stdout.strip() == "OUT_OF_MEMORY|50M"
