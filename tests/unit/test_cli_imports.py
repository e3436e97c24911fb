"""What starting the CLI imports: the shell and its settings load no engine.

Each command imports its heavy parts itself, so `hpcfleet --help`, `run list` and a
completion never pay for Prefect, MLflow, paramiko, Streamlit or boto3. Checked in a
fresh interpreter through `sys.modules` (what gets imported, not how long it takes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

ENGINES = ("prefect", "mlflow", "paramiko", "streamlit", "boto3", "botocore")
HEAVY_FOR_HELP = (*ENGINES, "sqlalchemy", "alembic", "pandas", "pydantic", "yaml", "rich")


def loaded_after(code: str, tmp_path: Path, **env: str) -> set[str]:
    """Top-level packages and project modules in sys.modules after running `code`."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"HPCFLEET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env},
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return set(modules) | {name.split(".")[0] for name in modules}


def test_importing_the_cli_loads_no_engine_and_no_store(tmp_path: Path) -> None:
    loaded = loaded_after("import hpcfleet.cli", tmp_path)
    assert not loaded & set(HEAVY_FOR_HELP)
    assert not {"flows.engine", "registry.store", "hpcfleet.server"} & loaded


def test_help_loads_no_engine_and_no_store(tmp_path: Path) -> None:
    code = (
        "import contextlib, io\n"
        "from hpcfleet.cli import run_cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run_cli(['--help']) == 0"
    )
    assert not loaded_after(code, tmp_path) & set(HEAVY_FOR_HELP)


def test_a_group_help_loads_no_engine_and_no_store(tmp_path: Path) -> None:
    # Typer itself loads pydantic to convert the root options before `run` parses.
    code = (
        "import contextlib, io\n"
        "from hpcfleet.cli import run_cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run_cli(['run', '--help']) == 0\n"
        "    assert run_cli(['run', 'launch', '--help']) == 0"
    )
    loaded = loaded_after(code, tmp_path)
    assert not loaded & {*HEAVY_FOR_HELP} - {"pydantic"}
    assert not {"flows.engine", "registry.store", "pydantic_settings"} & loaded


def run_command(command: list[str]) -> str:
    return (
        "import contextlib, io\n"
        "from hpcfleet.cli import run_cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert run_cli({command!r}) == 0"
    )


def stored_demo_run(home: Path) -> None:
    from registry.loading import load_document
    from registry.partner import Partner
    from registry.runspec import RunSpec
    from registry.store import Store

    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    store.put_partner(Partner(id="cuni", name="Charles University"))
    spec = load_document(REPO / "examples" / "demo" / "run.yaml", RunSpec)
    store.create_run("r1", spec, "cuni", {})
    store.close()


@pytest.mark.parametrize("command", [["run", "list", "--json"], ["site", "list", "--json"]])
def test_listing_a_new_home_makes_the_store_but_loads_no_engine(
    tmp_path: Path, command: list[str]
) -> None:
    loaded = loaded_after(run_command(command), tmp_path)
    assert "registry.store" in loaded  # no registry.db yet: the store made it
    assert (tmp_path / "registry.db").is_file()
    assert not loaded & set(ENGINES)
    assert "flows.engine" not in loaded


@pytest.mark.parametrize(
    "command", [["run", "list"], ["run", "list", "--json"], ["site", "list"], ["run", "show", "r1"]]
)
def test_listings_read_without_the_orm(tmp_path: Path, command: list[str]) -> None:
    stored_demo_run(tmp_path)
    loaded = loaded_after(run_command(command), tmp_path)
    assert not loaded & {*ENGINES, "sqlalchemy", "alembic", "pydantic_settings"}
    assert not {"registry.store", "registry.tables", "flows.engine"} & loaded


@pytest.mark.parametrize("command", [["run", "list"], ["run", "list", "--json"]])
def test_run_list_validates_no_document(tmp_path: Path, command: list[str]) -> None:
    stored_demo_run(tmp_path)
    loaded = loaded_after(run_command(command), tmp_path)
    assert not {"registry.records", "registry.runspec", "registry.site", "rich"} & loaded


def test_settings_are_import_light(tmp_path: Path) -> None:
    loaded = loaded_after("import flows.settings, hpcfleet.settings, dashboard.config", tmp_path)
    assert not loaded & {*ENGINES, "sqlalchemy", "flows.engine", "sites"}


def test_showing_and_watching_a_run_start_no_prefect(tmp_path: Path) -> None:
    from registry.states import RunState
    from registry.store import Store

    stored_demo_run(tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    store.update_run("r1", state=RunState.COMPLETED)
    store.close()
    code = (
        "import contextlib, io\n"
        "from hpcfleet.cli import run_cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert run_cli(['run', 'show', 'r1']) == 0\n"
        "    assert run_cli(['run', 'watch', 'r1']) == 0"
    )
    # The summary's metrics come from MLflow: a server that is not there answers at once.
    loaded = loaded_after(
        code,
        tmp_path,
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    assert "registry.store" in loaded and "prefect" not in loaded
