"""The `hpcfleet` command line (INTERFACE.md, "CLI"). No business logic lives here.

Exit codes: 0 ok; 1 the operation ran and failed; 2 bad input; 3 refused by an access
rule; 4 a site could not be reached. Errors are one or two sentences on stderr; a
traceback only with --debug.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated

import click
import typer

from flows.engine_env import configure_engines
from hpcfleet import cli_misc, cli_provenance, cli_runs, cli_server, cli_sites
from hpcfleet.settings import Settings
from registry.errors import HpcfleetError
from registry.owner_only import secure_home
from registry.redact import redact_urls

app = typer.Typer(
    name="hpcfleet",
    help="Federated experiment orchestration across a consortium's HPC sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cli_misc.partner_app, name="partner")
app.add_typer(cli_sites.site_app, name="site")
app.add_typer(cli_runs.run_app, name="run")
app.add_typer(cli_misc.milestone_app, name="milestone")
app.add_typer(cli_server.server_app, name="server")
app.add_typer(cli_server.db_app, name="db")
app.command("schema")(cli_misc.schema)
app.command("dashboard")(cli_misc.dashboard)
app.command("demo")(cli_misc.demo)
cli_runs.run_app.command("provenance")(cli_provenance.provenance)
app.command("lineage")(cli_provenance.lineage)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    home = Settings().home
    notice = secure_home(home)
    if notice:
        sys.stderr.write(f"hpcfleet: {notice}\n")
    configure_engines(home)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="hpcfleet", standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.stderr.write("hpcfleet: aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except HpcfleetError as exc:
        if debug:
            traceback.print_exc()
        # A driver's message may quote a database or tracking URL with its password.
        sys.stderr.write(f"hpcfleet: {redact_urls(str(exc))}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("hpcfleet: interrupted\n")
        sys.exit(130)
    sys.exit(0)
