"""`hpcfleet partner|milestone|schema|dashboard|demo`."""

from __future__ import annotations

import importlib
import json as jsonlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet import display
from hpcfleet.common import AsOption, JsonOption, acting_partner, open_store, settings
from registry.errors import DocumentError

if TYPE_CHECKING:
    from pydantic import BaseModel

partner_app = typer.Typer(help="Register the consortium's partners.", no_args_is_help=True)
milestone_app = typer.Typer(help="The programme's milestones.", no_args_is_help=True)

# document kind -> (module, model); imported only by `schema`
SCHEMAS = {
    "partner": ("registry.partner", "Partner"),
    "site": ("registry.site", "Site"),
    "run": ("registry.runspec", "RunSpec"),
    "milestone": ("registry.milestone", "Milestone"),
}


@partner_app.command("add")
def partner_add(
    partner_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str, typer.Option("--name", help="The organisation's name.")],
    country: Annotated[
        str | None, typer.Option("--country", help="ISO 3166 code, e.g. CZ.")
    ] = None,
) -> None:
    """Add (or update) a partner."""
    from registry.loading import validate_document
    from registry.partner import Partner

    partner = validate_document(
        {"id": partner_id, "name": name, "country": country}, Partner, source="partner"
    )
    new = open_store().put_partner(partner)
    display.err.print(f"partner {partner.id} {'added' if new else 'updated'}")


@partner_app.command("list")
def partner_list(json: JsonOption = False) -> None:
    """List partners."""
    from rich.table import Table

    partners = open_store().list_partners()
    if json:
        display.print_json([p.model_dump() for p in partners])
        return
    table = Table()
    for column in ("id", "name", "country"):
        table.add_column(column)
    for p in partners:
        table.add_row(p.id, p.name, p.country or "-")
    display.out.print(table)


@milestone_app.command("add")
def milestone_add(file: Path, as_partner: AsOption = None) -> None:
    """Add (or update) a milestone."""
    from registry.loading import load_document
    from registry.milestone import Milestone

    milestone = load_document(file, Milestone)
    store = open_store()
    new = store.put_milestone(milestone, acting_partner(store, as_partner))
    display.err.print(f"milestone {milestone.id} {'added' if new else 'updated'}")


@milestone_app.command("list")
def milestone_list(json: JsonOption = False) -> None:
    """List milestones."""
    from rich.table import Table

    records = open_store().list_milestones()
    if json:
        display.print_json(
            [dict(r.milestone.model_dump(mode="json"), owner=r.owner) for r in records]
        )
        return
    table = Table()
    for column in ("id", "title", "due", "criteria", "owner"):
        table.add_column(column)
    for r in records:
        m = r.milestone
        table.add_row(m.id, m.title, str(m.due), str(len(m.criteria)), r.owner)
    display.out.print(table)


def schema(
    kind: Annotated[str, typer.Argument(help="site | run | milestone | partner")],
) -> None:
    """Print the JSON Schema of a document, for editors."""
    if kind not in SCHEMAS:
        raise DocumentError(f"unknown document kind {kind!r}; choose one of {', '.join(SCHEMAS)}")
    module, name = SCHEMAS[kind]
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    sys.stdout.write(jsonlib.dumps(model.model_json_schema(), indent=2) + "\n")


def dashboard(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8501,
) -> None:
    """Start the Streamlit dashboard against the configured store and MLflow."""
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--server.fileWatcherType",
        "none",
    ]
    display.err.print(f"dashboard on http://127.0.0.1:{port}")
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))


def demo_dir() -> Path:
    """The demo documents: shipped in the wheel, or examples/demo in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "demo_files", here.parent / "examples" / "demo"):
        if (candidate / "run.yaml").exists():
            return candidate
    raise DocumentError("the demo files are missing from this installation")


def demo(
    directory: Annotated[Path | None, typer.Option("--dir", help="Demo documents.")] = None,
) -> None:
    """The embedded end-to-end example: two partners, two local sites, one cross-site run."""
    from flows.launch import launch as launch_run
    from hpcfleet.cli_runs import execute, mlflow_hint, print_summary
    from registry.loading import load_document, read_yaml_file, validate_document
    from registry.milestone import Milestone
    from registry.partner import Partner
    from registry.site import Site

    folder = directory or demo_dir()
    store = open_store()
    partners_data = read_yaml_file(folder / "partners.yaml")
    if not isinstance(partners_data, list):
        raise DocumentError("expected a list of partners", source=str(folder / "partners.yaml"))
    for index, item in enumerate(partners_data):
        store.put_partner(
            validate_document(item, Partner, source=f"{folder / 'partners.yaml'}[{index}]")
        )
    from sites.driver import DriverPool
    from sites.probe import probe_site

    pool = DriverPool(settings().home / "sites")
    for path in sorted((folder / "sites").glob("*.yaml")):
        site = load_document(path, Site)
        store.put_site(site, site.partner)
        store.add_probe(probe_site(site, pool).record())  # site health for the dashboard
    pool.close()
    owner = validate_document(partners_data[0], Partner, source="partners.yaml").id
    for path in sorted((folder / "milestones").glob("*.yaml")):
        store.put_milestone(load_document(path, Milestone), owner)
    display.err.print(f"home: {settings().home}")
    run = launch_run(store, folder / "run.yaml", owner).run
    display.out.print(f"launched run [bold]{run.run_id}[/] ({run.name}) as partner {owner}")
    final = execute(run.run_id)
    print_summary(store, final)
    display.out.print(mlflow_hint())
    if final.state.value != "COMPLETED":
        raise typer.Exit(1)
