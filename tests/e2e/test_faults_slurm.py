"""Fault tests on the real sandbox (issue 4): two SLURM clusters behind real sshd, runs
driven as a user drives them, and faults injected from outside: a login node that goes
away, an orchestrator killed with SIGKILL, a requeued job, a time limit, a failing
script, an out-of-memory kill; plus 100 MiB handed between the sites via S3 and relayed.

Every test asks each cluster's `sacct` how often each job name of the run
(`hpcfleet-<run>-<stage>-<attempt>`) was submitted: exactly once, never twice; and where
data moves, compares sha256 on both sides.

The faults that involve the orchestrator process or the CLI's answers go through the
`hpcfleet` CLI. Those that SLURM inflicts on one job (requeue, time limit, memory) are
driven in this process by the engine the CLI's Prefect flow wraps: each CLI run costs
20-40 s of start-up on this 2-core machine, which would put the file far over its budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
        with (self.tmp / f"{spec.stem}.log").open("wb") as log:
            return subprocess.Popen(
                [*HPCFLEET, "run", "launch", str(spec), "--wait"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, spec: Path) -> str:
        return (self.tmp / f"{spec.stem}.log").read_text(errors="replace")

    def drive(self, spec: Path) -> str:
        """Launch the run and drive it to its end in this process; returns its id."""
        from flows.engine import EngineConfig, execute_run
        from flows.launch import launch

        home = Path(self.env["HPCFLEET_HOME"])
        config = EngineConfig(
            f"sqlite:///{home / 'registry.db'}",
            home,
            f"sqlite:///{home / 'mlflow.db'}",
            (home / "mlartifacts").as_uri(),
        )
        run_id = launch(self.store, spec, "cuni").run.run_id
        execute_run(config, run_id)
        return run_id

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
            found[:] = (
                [j for j in self.store.jobs(runs[0].run_id, stage) if j.state is state]
                if runs
                else []
            )
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
        store.put_site(
            Site.model_validate(slurm_site_document(slurm_sandbox.site(name), owner)), owner
        )
    yield Fleet(slurm_sandbox, env, store, tmp_path)
    store.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def submissions(sandbox: Sandbox, site: str, run_id: str) -> dict[str, set[str]]:
    """{job name: distinct base job ids} of every job of the run sacct knows on `site`.

    Array tasks (123_0, 123_1) and a requeued job's records share one base id: that is
    one submission. A submission sbatch refused (e.g. with every node excluded, before
    the engine resubmits without exclusions) leaves a FAILED record that never had a
    node: it was never a job, so it is not counted.
    """
    result = sandbox.run_on(
        site,
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            "--duplicates",
            "--starttime=now-1days",
            "--format=JobID,State,NodeList,JobName%200",
        ],
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        job_id, state, nodes, name = line.split("|", 3)
        if not name.startswith(f"hpcfleet-{run_id}-"):
            continue
        if state == "FAILED" and nodes == "None assigned":
            continue
        found.setdefault(name, set()).add(job_id.split("_")[0])
    return found


def assert_submitted_once(sandbox: Sandbox, run_id: str, expected: dict[str, list[str]]) -> None:
    """sacct on both clusters shows exactly the expected job names (site -> "stage-attempt"),
    each submitted exactly once. Waits out sacct's few seconds of lag behind slurmctld."""
    want = {
        site: {f"hpcfleet-{run_id}-{name}" for name in names} for site, names in expected.items()
    }
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
    spec = fleet.spec(
        "sshd-outage",
        [
            {
                "name": "produce",
                "site": "site-a",
                "outputs": ["data.bin"],
                "script": 'head -c 1048576 /dev/urandom > "$HPCFLEET_OUTPUTS/data.bin"',
            },
            {
                "name": "consume",
                "site": "site-b",
                "needs": ["produce"],
                "outputs": ["sha"],
                "script": 'sleep 20; sha256sum < "$HPCFLEET_INPUTS/produce/data.bin" | cut -c1-64 '
                '> "$HPCFLEET_OUTPUTS/sha"',
            },
        ],
    )
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
    spec = fleet.spec(
        "killed",
        [
            {
                "name": "slow",
                "site": "site-a",
                "array": {"n": [1, 2]},
                "script": write,
                "outputs": ["out-1", "out-2"],
            },
            # Same site: chained, submitted with afterok while `slow` still runs.
            {
                "name": "chained",
                "site": "site-a",
                "needs": ["slow"],
                "script": 'cat "$HPCFLEET_INPUTS/slow/out-1" > "$HPCFLEET_OUTPUTS/copy"',
            },
            # Other site: submitted only once `slow` has completed, i.e. after the kill.
            {
                "name": "remote",
                "site": "site-b",
                "needs": ["slow"],
                "outputs": ["sum"],
                "script": 'cat "$HPCFLEET_INPUTS/slow/out-1" "$HPCFLEET_INPUTS/slow/out-2" '
                '> "$HPCFLEET_OUTPUTS/sum"',
            },
        ],
    )
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
    assert_submitted_once(
        fleet.sandbox, run_id, {"site-a": ["slow-1", "chained-1"], "site-b": ["remote-1"]}
    )
    for name in ("out-1", "out-2"):
        assert sha256(fleet.inputs("site-b", run_id, "remote", "slow") / name) == sha256(
            fleet.outputs("site-a", run_id, "slow") / name
        )
    assert (fleet.outputs("site-b", run_id, "remote") / "sum").read_text() == "1\n2\n"


# -- SLURM itself interrupts a job -------------------------------------------------------


def test_requeued_job_completes_as_the_same_submission(fleet: Fleet) -> None:
    spec = fleet.spec(
        "requeued",
        [
            {
                "name": "steady",
                "site": "site-a",
                "outputs": ["result"],
                "script": 'echo started >> "$HPCFLEET_OUTPUTS/starts"; sleep 6; '
                'echo done > "$HPCFLEET_OUTPUTS/result"',
            },
        ],
    )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine") as pool:
        driven = pool.submit(fleet.drive, spec)
        job_id = fleet.wait_for_job("steady", JobState.RUNNING).scheduler_id or ""
        requeued = fleet.sandbox.run_on("site-a", ["scontrol", "requeue", job_id])
        assert requeued.returncode == 0, requeued.stderr

        def pending() -> bool:
            state = fleet.sandbox.run_on("site-a", ["squeue", "-h", "-j", job_id, "-o", "%T"])
            return state.stdout.strip() == "PENDING"

        wait_until(pending, timeout=30, interval=0.5)
        # The engine sees it too: sacct says REQUEUED, squeue PENDING; both are our
        # PENDING (it runs again under the same id), not final, so it keeps following it.
        fleet.wait_for_job("steady", JobState.PENDING, timeout=30)
        # A requeued job waits ~120 s for its BeginTime; let it start again in 2 s. Not
        # at once: slurmd revoked the job's credential at the requeue, and a start within
        # the same second is refused ("Job credential revoked") and ends the job FAILED.
        started = fleet.sandbox.run_on(
            "site-a", ["scontrol", "update", f"JobId={job_id}", "StartTime=now+2"]
        )
        assert started.returncode == 0, started.stderr
        run_id = driven.result(timeout=RUN_TIMEOUT)

    # So the engine saw RUNNING, PENDING, RUNNING, COMPLETED of one job: one attempt, one
    # submission, nothing resubmitted.
    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    [record] = fleet.jobs(run_id, "steady")
    assert (record.attempt, record.scheduler_id, record.state) == (1, job_id, JobState.COMPLETED)
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["steady-1"]})
    # sacct keeps both lives of the job under its one id (once it has caught up).
    history: list[list[str]] = []

    def recorded() -> bool:
        result = fleet.sandbox.run_on(
            "site-a", ["sacct", "-n", "-P", "-X", "--duplicates", "-j", job_id, "-o", "State"]
        )
        history.append(result.stdout.split())
        return history[-1] == ["REQUEUED", "COMPLETED"]

    wait_until(recorded, timeout=20, interval=1)
    outputs = fleet.outputs("site-a", run_id, "steady")
    assert (outputs / "starts").read_text() == "started\nstarted\n"  # SLURM ran it twice
    assert (outputs / "result").read_text() == "done\n"


def test_resumable_job_past_its_time_limit_resumes_from_its_checkpoint(fleet: Fleet) -> None:
    # A minute is SLURM's smallest time limit; slurmctld enforces it within ~30 s after.
    script = """
if [ -f "$HPCFLEET_OUTPUTS/checkpoint" ]; then
    echo "resumed from $(cat "$HPCFLEET_OUTPUTS/checkpoint")" > "$HPCFLEET_OUTPUTS/result"
else
    echo "attempt $HPCFLEET_ATTEMPT" > "$HPCFLEET_OUTPUTS/checkpoint"
    sleep 600
fi
"""
    spec = fleet.spec(
        "timeout",
        [
            {
                "name": "long",
                "site": "site-a",
                "resources": {"time": "00:01:00"},
                "resumable": True,
                "outputs": ["result"],
                "script": script,
            },
        ],
    )
    run_id = fleet.drive(spec)

    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    jobs = fleet.jobs(run_id, "long")
    assert [(j.attempt, j.state) for j in jobs] == [(1, JobState.TIMEOUT), (2, JobState.COMPLETED)]
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["long-1", "long-2"]})
    accounted = fleet.sandbox.run_on(
        "site-a", ["sacct", "-n", "-P", "-X", "-j", jobs[0].scheduler_id or "", "-o", "State"]
    )
    assert accounted.stdout.strip() == "TIMEOUT"
    result = fleet.outputs("site-a", run_id, "long") / "result"
    assert result.read_text() == "resumed from attempt 1\n"


def sacct_times(fleet: Fleet, job_ids: list[str]) -> dict[str, dict[str, str]]:
    """{job id: {State, Submit, Start, End, JobName}} of the allocations (times in epoch
    seconds). By id: a job never eligible to start (its dependency never held) has no
    eligible time, and sacct's time windows leave it out."""
    result = fleet.sandbox.run_on(
        "site-a",
        "SLURM_TIME_FORMAT=%s sacct -n -P -X -o JobID,State,Submit,Start,End,JobName%200 -j "
        + ",".join(job_ids),
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines()]
    keys = ("State", "Submit", "Start", "End", "JobName")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def test_chained_segments_take_over_after_a_time_limit_without_a_new_submission(
    fleet: Fleet,
) -> None:
    # chain: 3 queues segments 2-4 behind segment 1 at once. Segment 1 hits its
    # one-minute limit; segment 2, queued all along, resumes from its checkpoint and
    # completes; segments 3 and 4 are dropped.
    script = """
if [ -f "$HPCFLEET_OUTPUTS/checkpoint" ]; then
    echo "segment $HPCFLEET_ATTEMPT resumed from $(cat "$HPCFLEET_OUTPUTS/checkpoint")" \
        > "$HPCFLEET_OUTPUTS/result"
else
    echo "segment $HPCFLEET_ATTEMPT" > "$HPCFLEET_OUTPUTS/checkpoint"
    sleep 600
fi
"""
    spec = fleet.spec(
        "segments",
        [
            {
                "name": "long",
                "site": "site-a",
                "resources": {"time": "00:01:00"},
                "resumable": True,
                "chain": 3,
                "outputs": ["result"],
                "script": script,
            },
        ],
    )
    run_id = fleet.drive(spec)

    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    jobs = fleet.jobs(run_id, "long")
    assert [(j.attempt, j.state) for j in jobs] == [
        (1, JobState.TIMEOUT),
        (2, JobState.COMPLETED),
        (3, JobState.CANCELLED),
        (4, JobState.CANCELLED),
    ]
    assert [j.reason for j in jobs[2:]] == ["segment dropped: segment 2 ended completed"] * 2
    result = fleet.outputs("site-a", run_id, "long") / "result"
    assert result.read_text() == "segment 2 resumed from segment 1\n"
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["long-1", "long-2"]})

    ids = [j.scheduler_id or "" for j in jobs]
    accounted = sacct_times(fleet, ids)
    assert [accounted[i]["JobName"] for i in ids] == [
        f"hpcfleet-{run_id}-long-{n}" for n in (1, 2, 3, 4)
    ]
    first, second = accounted[ids[0]], accounted[ids[1]]
    assert first["State"] == "TIMEOUT" and second["State"] == "COMPLETED"
    # Segment 2 was queued before segment 1 ended, and started only after it ended.
    assert int(second["Submit"]) < int(first["End"]) <= int(second["Start"])
    assert int(ids[1]) > int(ids[0])
    for dropped in ids[2:]:
        # Cancelled while queued: never started.
        assert accounted[dropped]["State"] == "CANCELLED"
        assert accounted[dropped]["Start"] in ("None", "Unknown")
        assert int(accounted[dropped]["Submit"]) < int(first["End"])

    shown = cli(fleet.env, "run", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    table = lines[lines.index("long segments:") + 1 :]
    assert table[0].split() == [
        "segment",
        "job",
        "state",
        "node",
        "started",
        "ended",
        "gpu-h",
        "note",
    ]
    assert [row.split()[:3] for row in table[1:5]] == [
        ["1", ids[0], "TIMEOUT"],
        ["2", ids[1], "COMPLETED"],
        ["3", ids[2], "DROPPED"],
        ["4", ids[3], "DROPPED"],
    ]
    assert table[5].startswith("4 segments, ")


def test_a_chain_over_the_qos_submit_limit_is_shorter_and_still_completes(fleet: Fleet) -> None:
    # QOS `limited` lets a user queue 2 jobs: segments 1 and 2 are queued, segment 3 is
    # refused and dropped at once instead of holding up the chain; segment 1 completes,
    # so SLURM cancels segment 2.
    spec = fleet.spec(
        "segments-limited",
        [
            {
                "name": "short",
                "site": "site-a",
                "resources": {"time": "00:01:00", "qos": "limited"},
                "resumable": True,
                "chain": 2,
                "command": ["true"],
            },
        ],
    )
    run_id = fleet.drive(spec)

    assert fleet.store.get_run(run_id).state is RunState.COMPLETED
    first, *rest = fleet.jobs(run_id, "short")
    assert (first.attempt, first.state) == (1, JobState.COMPLETED)
    assert rest and all((j.reason or "").startswith("segment dropped: ") for j in rest)
    assert any("QOSMaxSubmitJobPerUserLimit" in (j.reason or "") for j in rest), rest


def test_failing_job_is_retried_then_fails_the_run_with_its_last_words(fleet: Fleet) -> None:
    spec = fleet.spec(
        "failing",
        [
            {
                "name": "flaky",
                "site": "site-a",
                "retries": 1,
                "script": 'echo "attempt $HPCFLEET_ATTEMPT: cannot open shard 7" >&2; exit 1',
            },
            {"name": "downstream", "site": "site-b", "needs": ["flaky"], "command": ["true"]},
        ],
    )
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
        (1, "FAILED", 1),
        (2, "FAILED", 1),
    ]
    assert stages["downstream"]["state"] == "CANCELLED"
    assert stages["downstream"]["reason"] == "skipped: needs flaky, which failed"
    assert stages["downstream"]["jobs"] == []
    assert "cannot open shard 7" in shown["reason"]
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["flaky-1", "flaky-2"]})


def test_job_killed_for_memory_fails_with_a_clear_reason(fleet: Fleet) -> None:
    spec = fleet.spec(
        "hungry",
        [
            {
                "name": "hungry",
                "site": "site-a",
                "resources": {"mem": "50M"},
                "retries": 1,
                "script": 'python3 -c "x = bytearray(300 * 1024 * 1024); import time; time.sleep(5)"',
            },
        ],
    )
    run_id = fleet.drive(spec)

    run = fleet.store.get_run(run_id)
    [stage] = fleet.store.stages(run_id)
    assert run.state is RunState.FAILED and stage.state is RunState.FAILED
    assert (stage.reason or "").startswith(
        "hungry on site-a ran out of memory; raise resources.mem"
    )
    assert "ran out of memory" in (run.reason or "")
    # Not a failure that `retries` covers: the same job would be killed again.
    [job] = fleet.jobs(run_id, "hungry")
    assert job.state is JobState.OUT_OF_MEMORY
    assert_submitted_once(fleet.sandbox, run_id, {"site-a": ["hungry-1"]})
    accounted = fleet.sandbox.run_on(
        "site-a", ["sacct", "-n", "-P", "-X", "-j", job.scheduler_id or "", "-o", "State,ReqMem"]
    )
    assert accounted.stdout.strip() == "OUT_OF_MEMORY|50M"


# -- 100 MiB between the clusters --------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def produce(driver: SiteDriver, layout: StageLayout) -> None:
    """100 MiB of random bytes and a small tree in the stage's outputs, made on the site."""
    outputs = shlex.quote(layout.outputs)
    run_checked(
        driver,
        f"mkdir -p {outputs}/ckpt/sub && "
        f"head -c {100 * MIB} /dev/urandom > {outputs}/ckpt/model.bin && "
        f"printf 'tokens\\n' > {outputs}/ckpt/sub/vocab.txt && "
        f"printf 'x' > {outputs}/'name with spaces.txt'",
    )


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, read from this machine's side of the site."""
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("via", ["s3", "relay"])
def test_100_mib_handed_from_site_a_to_site_b_byte_exact(
    slurm_sandbox: Sandbox,
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
) -> None:
    storage: dict[str, Any] = {}
    if via == "s3":
        import boto3

        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        bucket = f"handoff-{uuid.uuid4().hex[:8]}"
        client = boto3.Session(profile_name=s3.profile).client("s3", endpoint_url=s3.endpoint)
        client.create_bucket(Bucket=bucket)
        storage = {
            "storage": {"s3": {"endpoint": s3.endpoint, "bucket": bucket, "profile": s3.profile}}
        }
    pool = DriverPool(tmp_path / "sites")
    site_a = pool.get(
        Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni", **storage))
    )
    site_b = pool.get(Site.model_validate(slurm_site_document(slurm_sandbox.site("site-b"), "csc")))
    run_id = f"handoff-{via}-{uuid.uuid4().hex[:8]}"
    source = StageLayout(site_a.workdir, run_id, "train")
    target = StageLayout(site_b.workdir, run_id, "evaluate")
    try:
        produce(site_a, source)
        how = stage_input(site_a, source, site_b, target)
        sent = digests(Path(source.outputs))
        assert set(sent) == {"ckpt/model.bin", "ckpt/sub/vocab.txt", "name with spaces.txt"}
        assert digests(Path(target.input_of("train"))) == sent
        assert Path(target.input_of("train"), "ckpt", "model.bin").stat().st_size == 100 * MIB
        if via == "s3":
            assert how.startswith(
                f"through s3://{bucket}/hpcfleet/{run_id}/train/outputs of site-a"
            )
            [big] = [
                o
                for o in client.list_objects_v2(Bucket=bucket)["Contents"]
                if o["Key"].endswith("model.bin")
            ]
            assert big["Size"] == 100 * MIB
        else:
            assert how.startswith("relayed from site-a through this machine")
    finally:
        for driver in (site_a, site_b):
            run_checked(driver, f"rm -rf {shlex.quote(f'{driver.workdir}/runs/{run_id}')}")
        pool.close()
