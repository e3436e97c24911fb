"""`where: login` stages on the real sandbox: run over the site's one SSH connection on
its login node (the sandbox's sshd), online on an `offline` site, logged like a job,
one after the other with `policy.login_tasks: 1`, stopped at their time limit, alive
across a dropped connection, cancellable; a SLURM stage after them reads their file."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from flows.engine import EngineConfig, execute_run
from flows.launch import launch
from registry.partner import Partner
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store
from sites.driver import DriverPool
from sites.scheduler import JobRequest, JobResources, JobStatus, TaskSpec
from tests.helpers import write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

# A login task must be online; it writes the "model" and records its own times.
DOWNLOAD = """
if [ -n "${HF_HUB_OFFLINE:-}${WANDB_MODE:-}" ]; then echo "offline on the login node" >&2; exit 3; fi
echo "fetching $1 on $(hostname)"
mkdir -p "$HPCFLEET_OUTPUTS/model"
echo "weights of $1" > "$HPCFLEET_OUTPUTS/model/$1.txt"
sleep 3
"""
# The batch job after them: offline, and it reads what the login tasks fetched.
TRAIN = """
[ "$HF_HUB_OFFLINE" = 1 ] && [ "$WANDB_MODE" = offline ] || { echo "online in a job" >&2; exit 4; }
cat "$HPCFLEET_INPUTS/download/model/a.txt" "$HPCFLEET_INPUTS/fetch/model/b.txt"
"""


def engine(slurm_sandbox: Sandbox, tmp_path: Path) -> tuple[Store, EngineConfig]:
    config = EngineConfig(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        home=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=(tmp_path / "mlartifacts").as_uri(),
    )
    store = Store.open(config.database_url)
    store.put_partner(Partner(id="cuni", name="Charles University"))
    document = slurm_site_document(slurm_sandbox.site("site-a"), "cuni")
    document["environment"] = {**document["environment"], "offline": True}
    document["policy"] = {**document["policy"], "login_tasks": 1}
    store.put_site(Site.model_validate(document), "cuni")
    return store, config


def login_stage(name: str, script: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "site": "site-a", "where": "login", "script": script, **fields}


def test_login_stages_fetch_one_at_a_time_for_an_offline_slurm_job(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    store, config = engine(slurm_sandbox, tmp_path)
    stages = [
        login_stage("download", "set -- a\n" + DOWNLOAD, outputs=["model/a.txt"]),
        login_stage("fetch", "set -- b\n" + DOWNLOAD, outputs=["model/b.txt"]),
        {
            "name": "train",
            "site": "site-a",
            "needs": ["download", "fetch"],
            "resources": {"time": "00:02:00"},
            "script": TRAIN,
        },
    ]
    spec = write_yaml(tmp_path / "run.yaml", {"name": "login", "stages": stages})
    run_id = launch(store, spec, "cuni").run.run_id

    assert execute_run(config, run_id).state is RunState.COMPLETED
    [download] = store.jobs(run_id, "download")
    [fetch] = store.jobs(run_id, "fetch")
    [train] = store.jobs(run_id, "train")
    assert download.scheduler_id and download.scheduler_id.startswith("L")
    assert train.scheduler_id and train.scheduler_id.isdigit()  # a SLURM job
    # login_tasks: 1 -> the second login task started after the first had ended.
    first, second = sorted([download, fetch], key=lambda j: j.started or 0)
    assert first.ended and second.started and second.started >= first.ended
    assert first.started and first.ended - first.started >= timedelta(seconds=3)  # its sleep

    client = MlflowClient(config.tracking_uri)
    logged = Path(client.download_artifacts(download.mlflow_run_id or "", "logs", str(tmp_path)))
    assert "fetching a on" in (logged / "0.out").read_text()
    train_log = Path(client.download_artifacts(train.mlflow_run_id or "", "logs", str(tmp_path)))
    assert (train_log / "0.out").read_text() == "weights of a\nweights of b\n"
    store.close()


def test_a_login_stage_is_stopped_at_its_time_limit(slurm_sandbox: Sandbox, tmp_path: Path) -> None:
    store, config = engine(slurm_sandbox, tmp_path)
    stage = login_stage(
        "download", "echo started; sleep 120; echo never", resources={"time": "00:00:03"}
    )
    spec = write_yaml(tmp_path / "run.yaml", {"name": "slow", "stages": [stage]})
    run_id = launch(store, spec, "cuni").run.run_id

    began = time.monotonic()
    assert execute_run(config, run_id).state is RunState.FAILED
    assert time.monotonic() - began < 60  # not the 120 s the script wanted
    [job] = store.jobs(run_id, "download")
    assert job.state is JobState.TIMEOUT
    assert job.reason and "time limit of 3 s" in job.reason
    logged = Path(
        MlflowClient(config.tracking_uri).download_artifacts(
            job.mlflow_run_id or "", "logs", str(tmp_path)
        )
    )
    assert (logged / "0.out").read_text() == "started\n"
    store.close()


def test_a_login_task_outlives_its_connection_and_can_be_cancelled(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    token = f"login-{uuid.uuid4().hex[:12]}"
    pool = DriverPool(tmp_path)
    driver = pool.get(site)
    base = f"{driver.workdir}/tests/{token}"
    request = JobRequest(
        name=f"hpcfleet-{token}-download-1",
        workdir=f"{base}/work",
        # A child of its own keeps running unless the whole group is stopped.
        tasks=(
            TaskSpec(
                script=f"sh -c 'sleep 300; true' {token}-a & sh -c 'sleep 301; true' {token}-b"
            ),
        ),
        log_dir=f"{base}/logs",
        resources=JobResources(time_seconds=600),
        where="login",
    )
    job_id = driver.scheduler.submit(request)
    again = DriverPool(tmp_path)
    try:
        assert wait_for(driver.scheduler.status, job_id, JobState.RUNNING).node
        running = driver.transport.run(f"pgrep -af '{token}-[ab]' || true").stdout.splitlines()
        assert {line.split()[-1] for line in running} == {f"{token}-a", f"{token}-b"}
        pool.close()  # the connection (and the orchestrator that held it) is gone

        driver = again.get(site)
        [found] = driver.scheduler.find_by_name(request.name)
        assert (found.job_id, found.state) == (job_id, JobState.RUNNING)
        driver.scheduler.cancel([job_id])
        final = wait_for(driver.scheduler.status, job_id, JobState.CANCELLED)
        assert final.ended is not None
        # ("-[ab]": the pattern does not match this very command line.)
        left = driver.transport.run(f"pgrep -f '{token}-[ab]' || true").stdout.split()
        assert left == []  # both children: the task's whole process group
    finally:
        again.get(site).scheduler.cancel([job_id])  # never left holding the login slot
        again.close()
        pool.close()


def wait_for(status: Any, job_id: str, state: JobState) -> JobStatus:
    seen = None
    for _ in range(60):
        seen = status([job_id]).get(job_id)
        if seen is not None and seen.state is state:
            return seen  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never {state}: {seen}")
