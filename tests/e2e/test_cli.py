"""The CLI contract: exit codes, one-line errors naming file and field, JSON shapes,
nothing stored on bad input, and resume after the orchestrator was SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from registry.states import JobState
from registry.store import Store
from tests.helpers import HPCFLEET, REPO, cli, cli_env, wait_until, write_yaml


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path / "home")
    assert (
        cli(
            env, "partner", "add", "cuni", "--name", "Charles University", "--country", "CZ"
        ).returncode
        == 0
    )
    assert cli(env, "partner", "add", "csc", "--name", "CSC").returncode == 0
    site_a = write_yaml(
        tmp_path / "site-a.yaml",
        {
            "name": "site-a",
            "partner": "cuni",
            "scheduler": "local",
            "shared_with": ["*"],
            "policy": {"min_poll_interval": "0.2s"},
        },
    )
    site_b = write_yaml(
        tmp_path / "site-b.yaml",
        {"name": "site-b", "partner": "csc", "scheduler": "local", "shared_with": []},
    )
    assert cli(env, "site", "add", str(site_a), "--as", "cuni").returncode == 0
    assert cli(env, "site", "add", str(site_b), "--as", "csc").returncode == 0
    env["HPCFLEET_PARTNER"] = "cuni"
    return env


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def runs(env: dict[str, str]) -> list[dict[str, object]]:
    result = cli(env, "run", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_bad_site_documents_exit_2_naming_file_and_field(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {"name": "x", "partner": "cuni", "scheduler": "pbs"})
    message = one_line_error(result := cli(env, "site", "add", str(bad)))
    assert result.returncode == 2
    assert message.startswith(f"hpcfleet: {bad}: scheduler:")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    result = cli(env, "site", "add", str(tmp_path / "broken.yaml"))
    assert result.returncode == 2 and "invalid YAML" in one_line_error(result)
    assert [s["name"] for s in json.loads(cli(env, "site", "list", "--json").stdout)] == [
        "site-a",
        "site-b",
    ]


def test_changing_another_partners_site_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    takeover = write_yaml(
        tmp_path / "b.yaml", {"name": "site-b", "partner": "cuni", "scheduler": "local"}
    )
    result = cli(env, "site", "add", str(takeover))
    assert result.returncode == 3
    assert "belongs to partner 'csc'" in one_line_error(result)
    assert cli(env, "site", "remove", "site-b").returncode == 3


def test_no_acting_partner_is_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    del env["HPCFLEET_PARTNER"]
    result = cli(env, "site", "remove", "site-a")
    assert result.returncode == 2 and "--as" in one_line_error(result)


@pytest.mark.parametrize(
    ("stages", "code", "fragment"),
    [
        (
            [{"name": "a", "site": "nowhere", "command": ["true"]}],
            2,
            "stages[0].site: unknown site 'nowhere'",
        ),
        (
            [{"name": "a", "site": "site-b", "command": ["true"]}],
            3,
            "not shared with partner 'cuni'",
        ),
        (
            [{"name": "a", "site": "site-a", "command": ["true"], "needs": ["b"]}],
            2,
            "stages[0].needs[0]: unknown stage 'b'",
        ),
        (
            [
                {"name": "a", "site": "site-a", "command": ["true"], "needs": ["b"]},
                {"name": "b", "site": "site-a", "command": ["true"], "needs": ["a"]},
            ],
            2,
            "cycle",
        ),
        (
            [
                {"name": "a", "site": "site-a", "command": ["true"]},
                {"name": "a", "site": "site-a", "command": ["true"]},
            ],
            2,
            "duplicate stage name",
        ),
        (
            [{"name": "a", "site": "site-a", "command": ["true"], "gpus": 1}],
            2,
            "stages[0].gpus: unknown key",
        ),
        (
            [{"name": "a", "site": "site-a", "command": ["true"], "retries": "many"}],
            2,
            "stages[0].retries",
        ),
    ],
)
def test_bad_run_specs_launch_nothing(
    env: dict[str, str], tmp_path: Path, stages: list[object], code: int, fragment: str
) -> None:
    spec = write_yaml(tmp_path / "run.yaml", {"name": "r", "stages": stages})
    result = cli(env, "run", "launch", str(spec), "--wait")
    assert result.returncode == code, result.stderr
    message = one_line_error(result)
    assert fragment in message
    if code == 2:
        assert str(spec) in message
    assert runs(env) == []
    assert not (Path(env["HPCFLEET_HOME"]) / "sites").exists()  # nothing was started


def test_schema_is_json_schema(env: dict[str, str]) -> None:
    for kind in ("site", "run", "milestone"):
        result = cli(env, "schema", kind)
        assert result.returncode == 0
        assert "properties" in json.loads(result.stdout)
    assert cli(env, "schema", "nope").returncode == 2


def test_failed_run_exits_1_and_show_explains(env: dict[str, str], tmp_path: Path) -> None:
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "r",
            "stages": [{"name": "boom", "site": "site-a", "script": "echo kaput >&2; exit 4"}],
        },
    )
    result = cli(env, "run", "launch", str(spec), "--wait")
    assert result.returncode == 1, result.stderr
    [run] = runs(env)
    assert run["state"] == "FAILED" and "kaput" in str(run["reason"])
    shown = json.loads(cli(env, "run", "show", str(run["run_id"]), "--json").stdout)
    [stage] = shown["stages"]
    assert stage["state"] == "FAILED" and stage["site"] == "site-a"
    assert stage["jobs"][0]["exit_code"] == 4


def test_resume_after_sigkill_never_submits_twice(env: dict[str, str], tmp_path: Path) -> None:
    script = 'sleep 4; echo done > "$HPCFLEET_OUTPUTS/out-$HPCFLEET_ARRAY_VALUE"'
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "r",
            "stages": [
                {"name": "slow", "site": "site-a", "array": {"n": [1, 2, 3]}, "script": script},
                {"name": "next", "site": "site-a", "needs": ["slow"], "command": ["true"]},
            ],
        },
    )
    orchestrator = subprocess.Popen(
        [*HPCFLEET, "run", "launch", str(spec), "--wait"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    store = Store.open(f"sqlite:///{env['HPCFLEET_HOME']}/registry.db")

    def running() -> bool:
        found = store.list_runs()
        return bool(found) and any(j.state is JobState.RUNNING for j in store.jobs(found[0].run_id))

    wait_until(running, timeout=120)
    os.killpg(orchestrator.pid, signal.SIGKILL)
    orchestrator.wait()
    run_id = store.list_runs()[0].run_id
    assert store.get_run(run_id).state.value == "RUNNING"
    result = cli(env, "run", "resume", run_id, "--force")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = store.jobs(run_id)
    slow = [j for j in jobs if j.stage == "slow"]
    assert len(slow) == 3 and {j.attempt for j in slow} == {1}
    assert all(j.state is JobState.COMPLETED for j in jobs)
    local_jobs = list(
        (Path(env["HPCFLEET_HOME"]) / "sites" / "site-a" / ".hpcfleet-local" / "jobs").iterdir()
    )
    assert len(local_jobs) == 2  # one array job for 'slow', one job for 'next'


def test_strict_launch_refuses_to_exceed_an_allocation(env: dict[str, str], tmp_path: Path) -> None:
    small = write_yaml(
        tmp_path / "site-g.yaml",
        {
            "name": "site-g",
            "partner": "cuni",
            "scheduler": "local",
            "local": {"gpus": 2},
            "allocation": {"gpu_hours": 1, "start": "2026-01-01", "end": "2036-01-01"},
        },
    )
    assert cli(env, "site", "add", str(small)).returncode == 0
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "big",
            "stages": [
                {
                    "name": "t",
                    "site": "site-g",
                    "command": ["true"],
                    "resources": {"gpus": 2, "time": "01:00:00"},
                }
            ],
        },
    )
    result = cli(env, "run", "launch", str(spec), "--strict")
    assert result.returncode == 3
    assert "up to 2.0 GPU-hours but only 1.0 of 1.0 remain" in one_line_error(result)
    assert runs(env) == []
