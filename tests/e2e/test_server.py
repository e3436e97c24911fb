"""The shared control plane, end to end on this machine: `hpcfleet server up` (Prefect
server and MLflow server on the local PostgreSQL, artifacts in a moto S3 bucket, a
worker, the dashboard), two partners' CLIs launching runs on the SLURM sandbox through
the deployment, the worker SIGKILLed mid-run and started again, what the shared worker
refuses (local sites; a Prefect API caller's job variables and parameters),
`hpcfleet server down`.

Every URL carries a password that PostgreSQL's trust authentication ignores: it is
there to prove that it is written nowhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from registry.states import JobState, RunState
from registry.store import Store
from sites.processes import group_members
from tests.helpers import cli, cli_env, wait_until, write_yaml
from tests.s3server import ACCESS_KEY, SECRET_KEY, free_port, s3_server
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

PASSWORD = "pw-Secret-42"
POSTGRES = f"postgresql+{{driver}}://postgres:{PASSWORD}@127.0.0.1:5432"
BUCKET = "hpcfleet-artifacts"


@dataclass
class Plane:
    control: dict[str, str]  # environment of the control plane's operator
    cuni: dict[str, str]  # a partner's CLI environment
    csc: dict[str, str]
    registry_url: str
    mlflow_url: str
    prefect_api: str
    home: Path
    tmp: Path
    s3_endpoint: str
    s3_env: dict[str, str]


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name="us-east-1")


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    admin = create_engine(POSTGRES.format(driver="psycopg") + "/postgres",
                          isolation_level="AUTOCOMMIT")
    try:
        admin.connect().close()
    except OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    prefix = f"hpcfleet_e2e_{secrets.token_hex(3)}"
    names = {piece: f"{prefix}_{piece}" for piece in ("registry", "prefect", "mlflow")}
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield names
    with admin.connect() as connection:
        for name in names.values():
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def plane(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("control-plane")
    registry = POSTGRES.format(driver="psycopg") + f"/{databases['registry']}"
    with s3_server(tmp) as s3:
        s3_env = {**s3.env(), "AWS_PROFILE": s3.profile, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
        s3_client(s3.endpoint).create_bucket(Bucket=BUCKET)
        ports = {name: free_port() for name in ("prefect", "mlflow", "dashboard")}
        home = tmp / "control"
        control = cli_env(home)
        control.update(
            s3_env,
            HPCFLEET_DATABASE_URL=registry,
            HPCFLEET_PREFECT_DATABASE_URL=POSTGRES.format(driver="asyncpg")
            + f"/{databases['prefect']}",
            HPCFLEET_MLFLOW_DATABASE_URL=POSTGRES.format(driver="psycopg")
            + f"/{databases['mlflow']}",
            HPCFLEET_MLFLOW_ARTIFACTS=f"s3://{BUCKET}/mlflow",
            PREFECT_WORKER_QUERY_SECONDS="1",
        )
        prefect_api = f"http://127.0.0.1:{ports['prefect']}/api"
        mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"

        def partner(name: str) -> dict[str, str]:
            env = cli_env(tmp / name)
            env.update(HPCFLEET_DATABASE_URL=registry, PREFECT_API_URL=prefect_api,
                       MLFLOW_TRACKING_URI=mlflow_url, HPCFLEET_PARTNER=name)
            return env

        plane = Plane(control, partner("cuni"), partner("csc"), registry, mlflow_url,
                      prefect_api, home, tmp, s3.endpoint, s3_env)
        try:
            result = cli(control, "server", "up", "--prefect-port", str(ports["prefect"]),
                         "--mlflow-port", str(ports["mlflow"]), "--dashboard-port",
                         str(ports["dashboard"]), "--no-prefect-ui", timeout=400)
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"PREFECT_API_URL={prefect_api}" in result.stdout
            yield plane
        finally:
            cli(control, "server", "down", timeout=120)


def pieces(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = cli(env, "server", "status", "--json")
    return {p["name"]: p for p in json.loads(result.stdout)}


def runs(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    result = cli(env, "run", "list", "--json")
    assert result.returncode == 0, result.stderr
    return {r["run_id"]: r for r in json.loads(result.stdout)}


def launch(env: dict[str, str], spec: Path) -> str:
    result = cli(env, "run", "launch", str(spec))
    assert result.returncode == 0, result.stderr
    assert "submitted to the control plane" in result.stderr
    return result.stdout.strip()


def register(plane: Plane, env: dict[str, str], partner: str, site: str,
             sandbox: Sandbox) -> None:
    """Partner `partner` and its SLURM site `site` of the sandbox, shared with no one."""
    assert cli(env, "partner", "add", partner, "--name", partner.upper()).returncode == 0
    document = slurm_site_document(sandbox.site(site), partner, shared_with=[])
    result = cli(env, "site", "add", str(write_yaml(plane.tmp / f"{site}.yaml", document)))
    assert result.returncode == 0, result.stderr


def submitted(sandbox: Sandbox, site: str, name: str) -> set[str]:
    """The SLURM jobs (array tasks counted once) named `name` on `site`."""
    command = ["sacct", "-n", "-P", "-X", "-S", "now-1hours", "--name", name, "-o", "JobID"]
    lines = sandbox.run_on(site, shlex.join(command)).stdout.split()
    return {line.split("_")[0] for line in lines}


def test_partners_share_runs_and_results_and_a_killed_worker_duplicates_nothing(
    plane: Plane, slurm_sandbox: Sandbox,
) -> None:
    up = pieces(plane.control)
    assert {n: p["ready"] for n, p in up.items()} == dict.fromkeys(
        ("prefect", "mlflow", "worker", "dashboard"), True)

    register(plane, plane.cuni, "cuni", "site-a", slurm_sandbox)
    register(plane, plane.csc, "csc", "site-b", slurm_sandbox)
    metric = '{"key": "accuracy", "value": 0.75}'
    quick = write_yaml(plane.tmp / "quick.yaml", {"name": "quick", "stages": [
        {"name": "eval", "site": "site-b", "script": f"echo '{metric}' >> \"$HPCFLEET_METRICS\""}]})
    slow = write_yaml(plane.tmp / "slow.yaml", {"name": "slow", "stages": [
        {"name": "train", "site": "site-a", "array": {"n": [1, 2]},
         "script": 'sleep 8; echo "{\\"key\\": \\"score\\", \\"value\\": $HPCFLEET_ARRAY_VALUE}"'
                   ' >> "$HPCFLEET_METRICS"'},
        {"name": "report", "site": "site-a", "needs": ["train"], "command": ["true"]}]})
    run_b = launch(plane.csc, quick)
    run_a = launch(plane.cuni, slow)

    # Kill the worker (and the orchestrator it runs) while train's jobs are running.
    store = Store.open(plane.registry_url)
    wait_until(lambda: any(j.state is JobState.RUNNING for j in store.jobs(run_a)), timeout=150)
    orchestrator = store.get_run(run_a).orchestrator
    worker_pid = up["worker"]["pid"]
    assert orchestrator and group_members(worker_pid)
    os.killpg(worker_pid, signal.SIGKILL)
    wait_until(lambda: not group_members(worker_pid), timeout=30)
    assert store.get_run(run_a).state is RunState.RUNNING
    restarted = cli(plane.control, "server", "up", timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    assert pieces(plane.control)["worker"]["pid"] != worker_pid
    worker_log = (plane.home / "server" / "worker.log").read_text()
    assert f"run {run_a}: orchestrator {orchestrator} is gone" in worker_log

    wait_until(lambda: all(store.get_run(r).state.is_final for r in (run_a, run_b)),
               timeout=180, interval=1)
    for env in (plane.cuni, plane.csc):  # everyone sees everyone's runs
        listed = runs(env)
        assert {listed[run_a]["partner"], listed[run_b]["partner"]} == {"cuni", "csc"}
        assert listed[run_a]["state"] == listed[run_b]["state"] == "COMPLETED", listed

    # Reattached, not resubmitted: one job record per task, all of attempt 1, and as many
    # submissions as SLURM saw (sacct may lag slurmctld by a few seconds).
    jobs_a = store.jobs(run_a)
    assert sorted((j.stage, j.array_index, j.attempt) for j in jobs_a) == [
        ("report", None, 1), ("train", 0, 1), ("train", 1, 1)]
    assert all(j.state is JobState.COMPLETED for j in jobs_a)
    expected = {("site-a", f"hpcfleet-{run_a}-train-1"): 1,
                ("site-a", f"hpcfleet-{run_a}-report-1"): 1,
                ("site-b", f"hpcfleet-{run_b}-eval-1"): 1}
    wait_until(lambda: {key: len(submitted(slurm_sandbox, *key)) for key in expected} == expected,
               timeout=30, interval=1)
    assert store.get_run(run_a).prefect_flow_run_id != store.get_run(run_b).prefect_flow_run_id

    # The results are in the shared MLflow, artifacts in S3; a partner's CLI shows them.
    client = MlflowClient(plane.mlflow_url)
    for run_id, partner in ((run_a, "cuni"), (run_b, "csc")):
        parent = client.get_run(store.get_run(run_id).mlflow_run_id or "")
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["hpcfleet.run_id"] == run_id
        assert parent.data.tags["hpcfleet.partner"] == partner
    watched = cli(plane.cuni, "run", "watch", run_b)
    assert watched.returncode == 0 and "accuracy" in watched.stdout, watched.stdout
    s3 = s3_client(plane.s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith(".out") for k in keys), keys

    # Credentials stayed in the environment: not in Prefect, MLflow, the registry, our logs.
    leaks = _texts_that_could_leak(plane, client, store)
    for secret in (PASSWORD, SECRET_KEY):
        assert not [where for where, content in leaks.items() if secret in content]
    store.close()


def _texts_that_could_leak(plane: Plane, client: MlflowClient, store: Store) -> dict[str, str]:
    texts: dict[str, str] = {}
    for root in (plane.home, plane.tmp / "cuni", plane.tmp / "csc"):
        for path in root.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_text(errors="replace")
    request = urllib.request.Request(
        f"{plane.prefect_api}/flow_runs/filter", data=b"{}",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        texts["prefect flow runs"] = answer.read().decode()
    with urllib.request.urlopen(f"{plane.prefect_api}/deployments/name/cross-site-run/hpcfleet",
                                timeout=10) as answer:
        texts["prefect deployment"] = answer.read().decode()
    experiments = [e.experiment_id for e in client.search_experiments()]
    texts["mlflow"] = json.dumps([r.to_dictionary() for r in client.search_runs(experiments)])
    texts["registry"] = json.dumps([r.model_dump(mode="json") for r in store.list_runs()])
    processes = []
    for pid in (p["pid"] for p in pieces(plane.control).values() if p["pid"]):
        for member in group_members(pid):
            with contextlib.suppress(OSError):
                processes.append(Path(f"/proc/{member}/cmdline").read_bytes().decode())
    texts["command lines"] = "\n".join(processes)
    return texts


def test_the_shared_worker_refuses_local_sites_before_submitting_anything(
    plane: Plane,
) -> None:
    cli(plane.csc, "partner", "add", "csc", "--name", "CSC")  # the first test may have
    workdir = plane.tmp / "sites" / "laptop"
    site = write_yaml(plane.tmp / "laptop.yaml", {
        "name": "laptop", "partner": "csc", "scheduler": "local", "shared_with": [],
        "environment": {"workdir": str(workdir)}, "policy": {"min_poll_interval": "0.2s"}})
    assert cli(plane.csc, "site", "add", str(site)).returncode == 0
    spec = write_yaml(plane.tmp / "local.yaml", {"name": "local", "stages": [
        {"name": "steal", "site": "laptop", "command": ["touch", str(plane.tmp / "ran")]}]})
    run_id = launch(plane.csc, spec)

    store = Store.open(plane.registry_url)
    wait_until(lambda: store.get_run(run_id).state.is_final, timeout=120, interval=1)
    run = store.get_run(run_id)
    assert run.state is RunState.FAILED
    assert "site 'laptop' is 'scheduler: local'" in (run.reason or "")
    assert "does not run jobs on its own machine" in (run.reason or "")
    assert store.jobs(run_id) == []
    assert not (plane.tmp / "ran").exists() and not workdir.exists()
    shown = cli(plane.csc, "run", "show", run_id)
    assert "does not run jobs on its own machine" in shown.stdout + shown.stderr
    store.close()


def test_a_prefect_api_caller_cannot_choose_what_the_worker_runs_or_where_it_looks(
    plane: Plane,
) -> None:
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    canary = plane.tmp / "canary"
    # Job variables that would run a command, or another registry, are refused outright.
    hostile_variables: list[dict[str, Any]] = [
        {"command": f"touch {canary}"},
        {"env": {"HPCFLEET_DATABASE_URL": f"sqlite:///{canary}"}},
        {"working_dir": str(plane.tmp)},
    ]
    with temporary_settings({PREFECT_API_URL: plane.prefect_api,
                             PREFECT_HOME: plane.tmp / "caller-prefect"}), \
            get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("cross-site-run/hpcfleet")
        assert deployment.parameters == {} and not deployment.job_variables
        for job_variables in hostile_variables:
            with pytest.raises(Exception, match=r"422|Unprocessable"):
                client.create_flow_run_from_deployment(
                    deployment.id, parameters={"run_id": "nope"}, job_variables=job_variables)
        # Prefect takes a parameter the flow does not have; the flow run fails on it
        # before the flow opens anything (a SQLite URL would create the canary file).
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"run_id": "nope", "database_url": f"sqlite:///{canary}"})

        def ended() -> bool:
            state = client.read_flow_run(flow_run.id).state
            return state is not None and state.is_final()

        wait_until(ended, timeout=120, interval=1)
        state = client.read_flow_run(flow_run.id).state
        assert state is not None and state.type in (StateType.FAILED, StateType.CRASHED)
    assert not canary.exists()


def test_server_down_stops_everything_it_started(plane: Plane) -> None:
    started = {name: p["pid"] for name, p in pieces(plane.control).items()}
    assert all(started.values()), started
    result = cli(plane.control, "server", "down", timeout=120)
    assert result.returncode == 0, result.stderr
    assert {pid: group_members(pid) for pid in started.values()} == {
        pid: [] for pid in started.values()}
    after = cli(plane.control, "server", "status", "--json")
    assert after.returncode == 1
    assert not any(p["running"] or p["ready"] for p in json.loads(after.stdout))


