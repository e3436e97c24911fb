"""The sandbox has what the EuroHPC sites have: a partition of two nodes (one slurmd
each) where `srun` spreads ranks over both, and a QOS whose submit limit and wall-time
limit SLURM enforces (`AccountingStorageEnforce=associations,limits,qos`).

`UPDATE_RECORDED=1` also writes what SLURM printed to tests/data/slurm/recorded/.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store
from sites.slurm.limits import submit_limit
from sites.slurm.parse import parse_sacct, parse_squeue
from sites.slurm.scheduler import squeue_status_command, status_command
from tests.helpers import consortium, wait_until, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = pytest.mark.slurm

RECORDED = Path(__file__).resolve().parents[1] / "data" / "slurm" / "recorded"
QOS_SUBMIT_LIMIT = RECORDED / "sbatch_qos_submit_limit.stderr"
LIMITED = "limited"  # MaxSubmitJobsPerUser=2, MaxWall=00:05:00


def record(name: str, text: str) -> None:
    if os.environ.get("UPDATE_RECORDED") == "1":
        (RECORDED / name).write_text(text)


@pytest.fixture
def site_a(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site("site-a")


@pytest.fixture
def jobs(slurm_sandbox: Sandbox) -> Iterator[list[str]]:
    """Job ids the test submitted on site-a; cancelled afterwards, so that the QOS
    `limited` is empty again for the next test."""
    submitted: list[str] = []
    yield submitted
    if submitted:
        slurm_sandbox.run_on("site-a", ["scancel", *submitted])
        wait_until(lambda: not queued(slurm_sandbox, submitted), timeout=30)


def queued(sandbox: Sandbox, job_ids: list[str]) -> list[str]:
    result = sandbox.run_on("site-a", ["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)])
    return result.stdout.split()


def sbatch(sandbox: Sandbox, *args: str) -> tuple[int, str, str]:
    result = sandbox.run_on("site-a", ["sbatch", "--parsable", "--output=/dev/null", *args])
    return result.returncode, result.stdout.strip().split(";")[0], result.stderr


def submit(sandbox: Sandbox, jobs: list[str], *args: str) -> str:
    returncode, job_id, stderr = sbatch(sandbox, *args)
    assert returncode == 0, stderr
    jobs.append(job_id)
    return job_id


def expand_nodes(sandbox: Sandbox, nodelist: str) -> set[str]:
    result = sandbox.run_on("site-a", ["scontrol", "show", "hostnames", nodelist])
    return set(result.stdout.split())


def test_two_node_job_runs_two_ranks_on_each_node(
    slurm_sandbox: Sandbox, site_a: SandboxSite, jobs: list[str]
) -> None:
    assert len(site_a.nodes) == 2
    output = f"realism-{uuid.uuid4().hex[:8]}.out"
    job_id = submit(
        slurm_sandbox, jobs, "--partition=multi", "--nodes=2", "--ntasks-per-node=2",
        f"--output={output}", "--wrap", "srun bash -c 'echo $SLURM_PROCID $SLURMD_NODENAME'",
    )  # fmt: skip

    def finished() -> bool:
        statuses = parse_sacct(slurm_sandbox.run_on("site-a", status_command([job_id])).stdout)
        return job_id in statuses and statuses[job_id].state.is_final

    wait_until(finished, timeout=60)
    sacct = slurm_sandbox.run_on("site-a", status_command([job_id])).stdout
    assert parse_sacct(sacct)[job_id].state is JobState.COMPLETED

    ranks = [line.split() for line in (site_a.home / output).read_text().splitlines()]
    assert sorted(int(rank) for rank, _ in ranks) == [0, 1, 2, 3]
    assert Counter(node for _, node in ranks) == {node: 2 for node in site_a.nodes}
    # sacct's record of the allocation names both nodes (it may lag the job's end).
    nodelist = ""

    def allocation_on_both_nodes() -> bool:
        nonlocal nodelist
        nodelist = slurm_sandbox.run_on(
            "site-a", ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "NodeList"]
        ).stdout.strip()
        return expand_nodes(slurm_sandbox, nodelist) == set(site_a.nodes)

    wait_until(allocation_on_both_nodes, timeout=15)
    record(
        "sacct_two_nodes.stdout", slurm_sandbox.run_on("site-a", status_command([job_id])).stdout
    )


def test_third_limited_submission_is_refused_with_the_qos_submit_limit(
    slurm_sandbox: Sandbox, jobs: list[str]
) -> None:
    # Held jobs stay queued (and count against the limit) without using a CPU.
    for _ in range(2):
        submit(slurm_sandbox, jobs, f"--qos={LIMITED}", "--hold", "--wrap", "true")
    returncode, _, stderr = sbatch(slurm_sandbox, f"--qos={LIMITED}", "--wrap", "true")
    record("sbatch_qos_submit_limit.stderr", stderr)
    assert returncode == 1
    assert stderr == QOS_SUBMIT_LIMIT.read_text()
    assert submit_limit(stderr) == "QOSMaxSubmitJobPerUserLimit"
    # The default QOS has no limit: jobs without --qos are unaffected.
    normal = submit(slurm_sandbox, jobs, "--hold", "--wrap", "true")
    qos = slurm_sandbox.run_on("site-a", ["squeue", "-h", "-o", "%q", "-j", normal])
    assert qos.stdout.strip() == "normal"


def test_job_over_the_qos_max_wall_pends_with_the_wall_time_reason(
    slurm_sandbox: Sandbox, jobs: list[str]
) -> None:
    too_long = submit(slurm_sandbox, jobs, f"--qos={LIMITED}", "--time=00:10:00", "--wrap", "true")
    squeue = ""

    def reason_given() -> bool:
        nonlocal squeue
        squeue = slurm_sandbox.run_on("site-a", squeue_status_command([too_long])).stdout
        status = parse_squeue(squeue).get(too_long)
        return status is not None and "(" in (status.reason or "")

    wait_until(reason_given, timeout=15)
    record("squeue_qos_max_wall.stdout", squeue)
    status = parse_squeue(squeue)[too_long]
    assert status.state is JobState.PENDING
    assert status.reason == "PENDING (QOSMaxWallDurationPerJobLimit)"
    # Without --time a job under the QOS gets its MaxWall as time limit.
    capped = submit(slurm_sandbox, jobs, f"--qos={LIMITED}", "--hold", "--wrap", "true")
    limit = slurm_sandbox.run_on("site-a", ["squeue", "-h", "-o", "%l", "-j", capped])
    assert limit.stdout.strip() == "5:00"


@pytest.fixture
def engine(tmp_path: Path, slurm_sandbox: Sandbox) -> Iterator[tuple[Store, EngineConfig]]:
    """A store whose site-a is the sandbox's SLURM site-a (partner cuni)."""
    config = EngineConfig(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        home=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
    )
    store = Store.open(config.database_url)
    consortium(store)
    document = slurm_site_document(slurm_sandbox.site("site-a"), "cuni")
    store.put_site(Site.model_validate(document), "cuni")
    yield store, config
    store.close()


@pytest.mark.timeout(180)
def test_stages_over_the_qos_submit_limit_wait_and_each_runs_once(
    engine: tuple[Store, EngineConfig],
    slurm_sandbox: Sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, config = engine
    names = ("one", "two", "three")
    stages = [
        {
            "name": name,
            "site": "site-a",
            # Within the QOS's MaxWall: a longer time limit would leave the job pending.
            "resources": {"qos": LIMITED, "time": "00:02:00"},
            "script": "sleep 3",
        }
        for name in names
    ]
    document = {"name": "qos", "experiment": "tests", "stages": stages}
    spec = write_yaml(tmp_path / "spec" / "run.yaml", document)
    run_id = launch(store, spec, "cuni").run.run_id
    wanted = ",".join(f"hpcfleet-{run_id}-{name}-1" for name in names)
    try:
        with caplog.at_level(logging.INFO, logger="flows.submission"):
            run = execute_run(config, run_id)
    finally:
        slurm_sandbox.run_on("site-a", ["scancel", f"--name={wanted}"])

    assert run.state is RunState.COMPLETED, run.reason
    # Three ready stages, room for two: one of them waited for the limit.
    assert any("job submit limit on site-a is reached" in m for m in caplog.messages)
    jobs = store.jobs(run_id)
    assert sorted(j.stage for j in jobs) == sorted(names)
    assert all(j.attempt == 1 and j.state is JobState.COMPLETED for j in jobs)
    # SLURM ran each stage's job once, under the QOS asked for, and no other. slurmdbd
    # records a job's end some time after slurmctld reports it: wait for all three rows.
    rows: list[list[str]] = []

    def accounted() -> bool:
        nonlocal rows
        sacct = slurm_sandbox.run_on(
            "site-a",
            ["sacct", "-n", "-X", "-P", "-S", "now-1days", "-o", "JobID,JobName%200,QOS,State",
             f"--name={wanted}"],
        )  # fmt: skip
        rows = [line.split("|") for line in sacct.stdout.splitlines() if line]
        return len(rows) >= len(names) and all(row[3] == "COMPLETED" for row in rows)

    wait_until(accounted, timeout=30)
    assert sorted(row[1] for row in rows) == sorted(wanted.split(","))
    assert {row[0] for row in rows} == {j.scheduler_id for j in jobs}
    assert {(row[2], row[3]) for row in rows} == {(LIMITED, "COMPLETED")}


@pytest.mark.timeout(120)
def test_an_array_larger_than_the_submit_limit_fails_instead_of_waiting_forever(
    engine: tuple[Store, EngineConfig], slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    store, config = engine
    stage = {
        "name": "wide",
        "site": "site-a",
        "resources": {"qos": LIMITED, "time": "00:02:00"},
        "array": {"n": ["1", "2", "3"]},  # three jobs under MaxSubmitJobsPerUser=2
        "script": "true",
    }
    document = {"name": "wide", "experiment": "tests", "stages": [stage]}
    run_id = launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run
    run = execute_run(config, run_id.run_id)

    assert run.state is RunState.FAILED
    [wide] = store.stages(run_id.run_id)
    assert "alone is more than the limit allows" in (wide.reason or ""), wide.reason
    assert all(j.scheduler_id is None for j in store.jobs(run_id.run_id))  # nothing queued


@pytest.mark.timeout(120)
def test_a_stage_over_the_qos_max_wall_fails_at_once_saying_why_instead_of_pending_for_ever(
    engine: tuple[Store, EngineConfig], slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    # The site document does not list the QOS's MaxWall, so placement cannot know; SLURM
    # accepts the job and would leave it PENDING (QOSMaxWallDurationPerJobLimit) for ever.
    store, config = engine
    stage = {
        "name": "long",
        "site": "site-a",
        "resources": {"qos": LIMITED, "time": "00:10:00"},
        "script": "true",
    }
    document = {"name": "long", "experiment": "tests", "stages": [stage]}
    run_id = launch(store, write_yaml(tmp_path / "spec" / "run.yaml", document), "cuni").run.run_id
    run = execute_run(config, run_id)

    assert run.state is RunState.FAILED
    [long] = store.stages(run_id)
    assert "QOSMaxWallDurationPerJobLimit" in (long.reason or ""), long.reason
    assert "ask for less" in (long.reason or "")
    [job] = store.jobs(run_id)
    assert job.state is JobState.FAILED and job.scheduler_id
    # Nothing is left in the queue: the job was cancelled, not abandoned.
    wait_until(lambda: queued(slurm_sandbox, [job.scheduler_id or ""]) == [], timeout=15)
