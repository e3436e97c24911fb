"""`run launch --dry-run` on a real SLURM site: it prints where each stage goes, why,
and the exact batch script, and leaves both the store and the cluster untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import cli, cli_env, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

SPEC = {
    "name": "dry",
    "stages": [
        {
            "name": "train",
            "site": "site-a",
            "resources": {
                "nodes": 1,
                "gpus": 2,
                "mem": "all",
                "exclusive": True,
                "time": "2-00:00:00",
                "extra_flags": ["--mem=100G", "--hint=nomultithread"],
            },
            "command": ["python3", "train.py"],
        },
        {
            "name": "evaluate",
            "needs": ["train"],
            "site": "site-a",
            "array": {"language": ["fi", "cs", "de"]},
            "array_parallelism": 2,
            "command": ["python3", "eval.py", "{language}"],
        },
    ],
}


def queued_and_recorded(sandbox: Sandbox) -> tuple[str, str]:
    """Every job slurmctld knows, and every job slurmdbd recorded today."""
    squeue = sandbox.run_on("site-a", "squeue --noheader --all --format=%i,%j")
    sacct = sandbox.run_on(
        "site-a", "sacct --noheader --parsable2 -X -a -S now-1days --format=JobID,JobName"
    )
    assert squeue.returncode == 0 and sacct.returncode == 0
    return squeue.stdout, sacct.stdout


def test_dry_run_prints_plan_and_script_and_changes_nothing(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    document = slurm_site_document(slurm_sandbox.site("site-a"), "cuni")
    document["slurm"]["partitions"] = [
        {"name": "cpu", "default": True, "max_time": "1-00:00:00"},
        {"name": "dev-g", "gpus_per_node": 2, "max_time": "03:00:00"},
        {"name": "gpu", "gpus_per_node": 2, "max_time": "3-00:00:00", "max_nodes": 4},
    ]
    document["policy"] = {"max_running_tasks": 8}
    site = write_yaml(tmp_path / "site-a.yaml", document)
    assert cli(env, "site", "add", str(site), "--as", "cuni").returncode == 0
    spec = write_yaml(tmp_path / "run.yaml", SPEC)
    (tmp_path / "train.py").write_text("print('hi')\n")
    db = tmp_path / "home" / "registry.db"
    store_before = hashlib.sha256(db.read_bytes()).hexdigest()
    cluster_before = queued_and_recorded(slurm_sandbox)

    result = cli(env, "run", "launch", str(spec), "--dry-run", "--as", "cuni")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== stage train: site site-a, partition gpu" in out
    # Why not dev-g: the 48-hour stage would never start there.
    assert "dev-g: time 2-00:00:00 > max_time 03:00:00" in out
    train_script = out.split("--- batch script (site-a) ---")[1]
    assert "#SBATCH --partition=gpu" in train_script
    assert "#SBATCH --exclusive" in train_script
    assert "#SBATCH --hint=nomultithread" in train_script
    # The stage's own --mem flag replaces mem: all; never two --mem lines.
    assert train_script.count("#SBATCH --mem") == 1 and "#SBATCH --mem=100G" in train_script
    evaluate_script = out.split("--- batch script (site-a) ---")[2]
    assert "#SBATCH --array=0-2%2" in evaluate_script
    assert "#SBATCH --partition=cpu" in evaluate_script

    assert hashlib.sha256(db.read_bytes()).hexdigest() == store_before
    assert json.loads(cli(env, "run", "list", "--json").stdout) == []
    assert queued_and_recorded(slurm_sandbox) == cluster_before


def test_dry_run_refuses_what_launch_refuses(slurm_sandbox: Sandbox, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    document = slurm_site_document(slurm_sandbox.site("site-a"), "cuni")
    site = write_yaml(tmp_path / "site-a.yaml", document)
    assert cli(env, "site", "add", str(site), "--as", "cuni").returncode == 0
    too_long = {
        "name": "r",
        "stages": [
            {
                "name": "s",
                "site": "site-a",
                "resources": {"time": "5-00:00:00"},
                "command": ["true"],
            }
        ],
    }
    result = cli(
        env,
        "run",
        "launch",
        str(write_yaml(tmp_path / "r.yaml", too_long)),
        "--dry-run",
        "--as",
        "cuni",
    )
    assert result.returncode == 2
    assert "max_time" in result.stderr and "--- batch script" not in result.stdout
