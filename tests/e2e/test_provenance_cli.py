"""`hpcfleet run launch` refuses a spec whose restricted data cannot stay where it may
(exit 2, naming the stage, the data, the rule and the sites), and stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import REPO, cli, cli_env, write_yaml


def test_launch_refuses_a_stage_that_would_take_restricted_data_abroad(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    demo = REPO / "examples" / "demo"
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    assert cli(env, "partner", "add", "csc", "--name", "CSC").returncode == 0
    for site in ("site-a", "site-b"):
        added = cli(
            env,
            "site",
            "add",
            str(demo / "sites" / f"{site}.yaml"),
            "--as",
            "cuni" if site == "site-a" else "csc",
        )
        assert added.returncode == 0, added.stderr
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
