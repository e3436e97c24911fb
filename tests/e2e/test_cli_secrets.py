"""Secrets through the CLI: document values shown only to their owner, URLs printed
without passwords, and the embedded default's files owner-only (HPCFLEET_HOME, its
stores, a local job's script and output)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli, cli_env, write_yaml

# An ordinary value, not a token (token-looking values are refused at `site add`): still
# the site owner's business, and no one else's.
PRIVATE_VALUE = "/scratch/project_7/codename-falcon"


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The CLI runs under the umask most users have (022), so owner-only is our doing."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One home for the module (CLI calls are slow on a busy machine)."""
    tmp_path = tmp_path_factory.mktemp("secrets")
    env = cli_env(tmp_path / "home")
    for partner in ("cuni", "csc"):
        assert cli(env, "partner", "add", partner, "--name", partner.upper()).returncode == 0
    site = write_yaml(
        tmp_path / "site-a.yaml",
        {
            "name": "site-a",
            "partner": "cuni",
            "scheduler": "local",
            "shared_with": ["*"],
            "environment": {"env": {"HF_HOME": PRIVATE_VALUE}},
            "policy": {"min_poll_interval": "0.2s"},
        },
    )
    assert cli(env, "site", "add", str(site), "--as", "cuni").returncode == 0
    return env


@pytest.fixture
def env(consortium: dict[str, str]) -> dict[str, str]:
    return dict(consortium)


@pytest.fixture
def home(env: dict[str, str]) -> Path:
    return Path(env["HPCFLEET_HOME"])


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}"


def test_site_env_values_are_shown_to_the_owner_only(env: dict[str, str]) -> None:
    shown = cli(env, "site", "show", "site-a", "--as", "csc")
    listed = cli(env, "site", "list", "--json", "--as", "csc")
    anonymous = cli(env, "site", "show", "site-a", "--json")
    for result in (shown, listed, anonymous):
        assert result.returncode == 0, result.stderr
        assert PRIVATE_VALUE not in result.stdout + result.stderr
        assert "HF_HOME" in result.stdout  # the names stay visible
    assert "--as cuni" in shown.stderr
    assert json.loads(listed.stdout)[0]["environment"]["env"] == {"HF_HOME": "***"}
    env["HPCFLEET_PARTNER"] = "cuni"
    owner = cli(env, "site", "show", "site-a", "--json")
    assert json.loads(owner.stdout)["environment"]["env"] == {"HF_HOME": PRIVATE_VALUE}


def test_server_status_prints_urls_without_passwords(env: dict[str, str], home: Path) -> None:
    server = home / "server"
    server.mkdir(exist_ok=True)
    # An external MLflow and Prefect behind basic auth, as `server up --mlflow-url` saves them
    # (port 9: nothing answers, so status reports them down at once).
    (server / "plan.json").write_text(
        json.dumps(
            {
                "mlflow_url": "http://alice:s3cret-pw@127.0.0.1:9",
                "prefect_url": "http://bob:pf-s3cret@127.0.0.1:9/api",
                "worker": False,
                "dashboard": False,
            }
        )
    )
    for args in ([], ["--json"]):
        result = cli(env, "server", "status", *args)
        assert result.returncode == 1  # nothing answers
        assert "s3cret" not in result.stdout + result.stderr
    urls = {piece["name"]: piece["url"] for piece in json.loads(result.stdout)}
    assert urls == {
        "prefect": "http://bob:***@127.0.0.1:9/api",
        "mlflow": "http://alice:***@127.0.0.1:9",
    }


def test_database_errors_print_the_url_without_password(env: dict[str, str]) -> None:
    env["HPCFLEET_DATABASE_URL"] = "postgresql+psycopg://hpc:db-s3cret@127.0.0.1:9/hpcfleet"
    result = cli(env, "site", "list")
    assert result.returncode != 0
    assert "db-s3cret" not in result.stdout + result.stderr
    assert "hpc:***@127.0.0.1:9" in result.stderr


def test_the_embedded_default_keeps_its_files_owner_only(
    env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "perm",
            "stages": [
                {
                    "name": "make",
                    "site": "site-a",
                    "env": {"STAGE_NOTE": "stage-private-note"},
                    "script": "echo out; echo result > $HPCFLEET_OUTPUTS/r.txt",
                    "outputs": ["r.txt"],
                }
            ],
        },
    )
    result = cli(env, "run", "launch", str(spec), "--wait", "--as", "cuni")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[0]
    site_root = home / "sites" / "site-a"
    [script] = (site_root / ".hpcfleet-local" / "jobs").glob("*/script.sh")
    [stdout] = (site_root / "runs" / run_id / "make").glob("attempt-*/logs/0.out")
    assert "stage-private-note" in script.read_text()
    found = {
        "home": mode(home),
        "registry.db": mode(home / "registry.db"),
        "mlflow.db": mode(home / "mlflow.db"),
        "mlartifacts": mode(home / "mlartifacts"),
        "sites": mode(home / "sites"),
        "job script": mode(script),
        "job stdout": mode(stdout),
        "job output": mode(site_root / "runs" / run_id / "make" / "outputs" / "r.txt"),
    }
    assert found == {
        "home": "700",
        "registry.db": "600",
        "mlflow.db": "600",
        "mlartifacts": "700",
        "sites": "700",
        "job script": "600",
        "job stdout": "600",
        "job output": "600",
    }
    other = cli(env, "run", "show", run_id, "--json", "--as", "csc")
    assert other.returncode == 0, other.stderr
    assert "stage-private-note" not in other.stdout
    assert json.loads(other.stdout)["stages"][0]["env"] == {"STAGE_NOTE": "***"}
    owner = json.loads(cli(env, "run", "show", run_id, "--json", "--as", "cuni").stdout)
    assert owner["stages"][0]["env"] == {"STAGE_NOTE": "stage-private-note"}


def test_an_existing_readable_home_is_made_owner_only_with_one_notice(
    env: dict[str, str], home: Path
) -> None:
    home.chmod(0o755)
    (home / "registry.db").chmod(0o644)
    result = cli(env, "site", "list", "--json")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "owner-only" in line]
    assert len(notices) == 1 and str(home) in notices[0]
    assert (mode(home), mode(home / "registry.db")) == ("700", "600")
    again = cli(env, "site", "list", "--json")
    assert "owner-only" not in again.stderr
