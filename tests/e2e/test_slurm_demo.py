"""The demo's run spec on two real SLURM clusters reached over real sshd (issue 3):
register, trust, check, launch --wait; then ask each cluster's sacct what ran there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from registry.store import Store
from tests.helpers import REPO, cli, cli_env, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm
LANGUAGES = 24
CHECKPOINTS = 3  # the demo's train writes iter_08, iter_16, iter_24


def sacct_names(sandbox: Sandbox, site: str, run_id: str) -> list[tuple[str, str]]:
    """(job id, job name) of every allocation of the run on one cluster."""
    names = [f"hpcfleet-{run_id}-{stage}-1" for stage in ("prepare", "train")]
    names += [f"hpcfleet-{run_id}-evaluate-{n}" for n in range(1, CHECKPOINTS + 1)]
    result = sandbox.run_on(
        site,
        f"sacct --noheader --parsable2 -X -S now-1days --format=JobID,JobName%200 "
        f"--name={','.join(names)}",
    )
    assert result.returncode == 0, result.stderr
    return [tuple(line.split("|", 1)) for line in result.stdout.splitlines() if line]  # type: ignore[misc]


def test_demo_spec_runs_on_two_slurm_sites_over_ssh(slurm_sandbox: Sandbox, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    assert cli(env, "partner", "add", "csc", "--name", "CSC").returncode == 0
    owners = {"site-a": "cuni", "site-b": "csc"}
    for name, owner in owners.items():
        document = slurm_site_document(slurm_sandbox.site(name), owner, pin=False)
        path = write_yaml(tmp_path / f"{name}.yaml", document)
        added = cli(env, "site", "add", str(path), "--as", owner)
        assert added.returncode == 0, added.stderr
        trusted = cli(env, "site", "trust", name, "--yes", "--as", owner)
        assert trusted.returncode == 0, trusted.stderr
        assert "SHA256:" in trusted.stdout
        checked = cli(env, "site", "check", name, "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        report = json.loads(checked.stdout)
        assert report["reachable"] and report["ok"]
        assert {c["name"] for c in report["checks"]} >= {
            "login",
            "sbatch",
            "sacct",
            "partition gpu",
            "account",
        }

    demo = tmp_path / "demo"
    shutil.copytree(REPO / "examples" / "demo", demo)
    launched = cli(
        env, "run", "launch", str(demo / "run.yaml"), "--wait", "--as", "cuni", timeout=900
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    run_id = launched.stdout.splitlines()[0].strip()

    store = Store.open(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    stages = {s.name: s for s in store.stages(run_id)}
    jobs = store.jobs(run_id)
    # train writes 3 checkpoints; each is evaluated in the 24 languages, nothing retried.
    assert len(jobs) == 2 + CHECKPOINTS * LANGUAGES
    assert {j.attempt for j in jobs if j.stage != "evaluate"} == {1}
    cells = [(j.checkpoint, j.array_index) for j in jobs if j.stage == "evaluate"]
    assert len(set(cells)) == len(cells) == CHECKPOINTS * LANGUAGES
    # Every stage ran exactly once (evaluate: once per checkpoint, each checkpoint its own
    # attempt, its cells spread over the sites as planned), on its planned sites only.
    arrays: dict[str, int] = {}
    for site in ("site-a", "site-b"):
        ran = sacct_names(slurm_sandbox, site, run_id)
        for stage, record in stages.items():
            for attempt in range(1, (CHECKPOINTS if stage == "evaluate" else 1) + 1):
                name = f"hpcfleet-{run_id}-{stage}-{attempt}"
                submissions = {job_id.split("_")[0] for job_id, ran_as in ran if ran_as == name}
                assert len(submissions) <= (1 if site in record.sites else 0), (site, name, ran)
                arrays[name] = arrays.get(name, 0) + len(submissions)
        stored_ids = {
            j.scheduler_id.split("_")[0] for j in jobs if j.site == site and j.scheduler_id
        }
        assert {job_id.split("_")[0] for job_id, _ in ran} == stored_ids
    assert all(arrays.values()) and len(arrays) == 2 + CHECKPOINTS
    assert set(stages["evaluate"].sites) == {"site-a", "site-b"}
    [train] = [j for j in jobs if j.stage == "train"]
    tres = slurm_sandbox.run_on(
        train.site, f"sacct -n -X -P -j {train.scheduler_id} -o AllocTRES,Partition"
    )
    assert "gres/gpu=1" in tres.stdout and tres.stdout.strip().endswith("|gpu")  # the GPU partition

    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    run = store.get_run(run_id)
    parent = client.get_run(run.mlflow_run_id or "")
    assert len([k for k in parent.data.metrics if k.startswith("accuracy/")]) == LANGUAGES
    experiment = client.get_experiment_by_name("tiny-llm")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`hpcfleet.run_id` = '{run_id}'"
    )
    tagged = {
        (c.data.tags["hpcfleet.site"], c.data.tags.get("slurm.job_id"))
        for c in children
        if "mlflow.parentRunId" in c.data.tags
        and c.data.tags.get("hpcfleet.results") != "checkpoint"  # a checkpoint's table
    }
    assert tagged == {(j.site, j.scheduler_id) for j in jobs}

    # No private key material reaches the store, MLflow, logs or the CLI's output.
    key_lines = [
        line
        for line in slurm_sandbox.site("site-a").key_path.read_text().splitlines()
        if line and "PRIVATE KEY" not in line
    ]
    haystacks = [launched.stdout.encode(), launched.stderr.encode()]
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            haystacks.append(path.read_bytes())
    for haystack in haystacks:
        assert b"PRIVATE KEY" not in haystack
        for line in key_lines:
            assert line.encode() not in haystack


def test_changed_host_key_is_refused_naming_both_fingerprints(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    import base64

    from sites.ssh.hostkeys import sha256_fingerprint

    def fingerprint_of_line(line: str) -> str:
        return sha256_fingerprint(base64.b64decode(line.split()[1]))

    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    site_a, site_b = slurm_sandbox.site("site-a"), slurm_sandbox.site("site-b")
    # site-a's document pins site-b's key: what a changed (or spoofed) server looks like.
    document = slurm_site_document(
        site_a,
        "cuni",
        ssh={
            "host": site_a.host,
            "port": site_a.port,
            "user": site_a.user,
            "identity_file": str(site_a.key_path),
            "host_key": site_b.host_key,
        },
    )
    assert (
        cli(
            env, "site", "add", str(write_yaml(tmp_path / "a.yaml", document)), "--as", "cuni"
        ).returncode
        == 0
    )
    checked = cli(env, "site", "check", "site-a", "--json")
    assert checked.returncode == 4
    report = json.loads(checked.stdout)
    assert report["reachable"] is False
    detail = " ".join(c["detail"] for c in report["checks"])
    assert "site-a" in detail
    assert (
        fingerprint_of_line(site_a.host_key) in detail
        and fingerprint_of_line(site_b.host_key) in detail
    )


def test_unreachable_site_check_exits_4(slurm_faults: Sandbox, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    document = slurm_site_document(slurm_faults.site("site-a"), "cuni")
    assert (
        cli(
            env, "site", "add", str(write_yaml(tmp_path / "a.yaml", document)), "--as", "cuni"
        ).returncode
        == 0
    )
    slurm_faults.partition("site-a", "reject")
    checked = cli(env, "site", "check", "site-a")
    assert checked.returncode == 4, checked.stdout + checked.stderr
    assert "FAILED" in checked.stdout
