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
from hpcfleet import cli_misc, cli_results, cli_runs, cli_server, cli_sites
from hpcfleet.settings import Settings
from registry.errors import HpcfleetError

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
app.command("results")(cli_results.results)
cli_runs.run_app.command("fill")(cli_results.fill)
app.command("dashboard")(cli_misc.dashboard)
app.command("demo")(cli_misc.demo)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    configure_engines(Settings().home)


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
        sys.stderr.write(f"hpcfleet: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("hpcfleet: interrupted\n")
        sys.exit(130)
    sys.exit(0)
