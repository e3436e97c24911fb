"""`hpcfleet run launch` refuses a spec whose restricted data cannot stay where it may
(exit 2, naming the stage, the data, the rule and the sites), and stores nothing; a
restricted run that can stay shows its residency, its crate and its lineage."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.helpers import REPO, cli, cli_env, write_yaml


def consortium(tmp_path: Path) -> dict[str, str]:
    """The demo's partners and sites: site-a in CZ, site-b (the GPU) in FI."""
    env = cli_env(tmp_path / "home")
    demo = REPO / "examples" / "demo"
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    assert cli(env, "partner", "add", "csc", "--name", "CSC").returncode == 0
    for site, owner in (("site-a", "cuni"), ("site-b", "csc")):
        added = cli(env, "site", "add", str(demo / "sites" / f"{site}.yaml"), "--as", owner)
        assert added.returncode == 0, added.stderr
    return env


def test_launch_refuses_a_stage_that_would_take_restricted_data_abroad(tmp_path: Path) -> None:
    env = consortium(tmp_path)
    spec = {
        "name": "stays-in-cz",
        "stages": [
            {
                "name": "prepare",
                "site": "site-a",
                "command": ["true"],
                "residency": {"countries": ["CZ"]},
            },
            {
                "name": "train",
                "site": {"require": {"min_gpus": 1}},
                "needs": ["prepare"],
                "command": ["true"],
            },
        ],
    }
    refused = cli(
        env, "run", "launch", str(write_yaml(tmp_path / "run.yaml", spec)), "--as", "cuni"
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = refused.stderr
    for part in (
        "stages[1].site",
        "stage 'train'",
        "countries CZ",
        "outputs of 'prepare'",
        "site-b (country FI)",
    ):
        assert part in message, (part, message)
    assert "Traceback" not in message
    assert json.loads(cli(env, "run", "list", "--json").stdout) == []


def test_restricted_run_shows_its_residency_crate_and_lineage(tmp_path: Path) -> None:
    env = consortium(tmp_path)
    spec = {
        "name": "stays-in-eu",
        "stages": [
            {
                "name": "prepare",
                "site": "site-a",
                "residency": {"region": "EU"},
                "outputs": ["data.txt"],
                "script": 'echo text > "$HPCFLEET_OUTPUTS/data.txt"',
            },
            {
                "name": "train",
                "site": "site-b",
                "needs": ["prepare"],
                "outputs": ["model.txt"],
                "script": 'cp "$HPCFLEET_INPUTS/prepare/data.txt" "$HPCFLEET_OUTPUTS/model.txt"',
            },
            {
                "name": "publish",
                "site": "site-b",
                "needs": ["train"],
                "declassifies": True,
                "outputs": ["card.txt"],
                "script": 'echo card > "$HPCFLEET_OUTPUTS/card.txt"',
            },
        ],
    }
    path = write_yaml(tmp_path / "run.yaml", spec)
    launched = cli(env, "run", "launch", str(path), "--wait", "--as", "cuni", timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    run_id = launched.stdout.splitlines()[0].strip()
    shown = json.loads(cli(env, "run", "show", run_id, "--json").stdout)
    residency = {s["name"]: s["residency"] for s in shown["stages"]}
    assert residency == {
        "prepare": ["region EU (outputs of 'prepare')"],
        "train": ["region EU (outputs of 'prepare')"],
        "publish": [],
    }
    written = cli(env, "run", "provenance", run_id, "--out", str(tmp_path / "crate.zip"))
    assert written.returncode == 0, written.stderr
    with zipfile.ZipFile(tmp_path / "crate.zip") as archive:
        manifest = json.loads(archive.read("manifests/train/site-b.json"))
    assert manifest["residency"] == "region EU (outputs of 'prepare')"
    traced = cli(env, "lineage", "card.txt")
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"made by run {run_id} stage publish")
    assert any("stage prepare" in line for line in lines)
    assert cli(env, "lineage", "0" * 64).returncode == 2
