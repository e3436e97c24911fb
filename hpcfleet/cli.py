"""The `hpcfleet` command line (INTERFACE.md, "CLI"). No business logic lives here.

Exit codes: 0 ok; 1 the operation ran and failed; 2 bad input (a usage error too);
3 refused by an access rule; 4 a site could not be reached. Errors are one or two
sentences on stderr; a traceback only with --debug. `main()` maps every error to them
in one place, so that each command inherits it.

Import-light: `hpcfleet --help` loads only Typer and the command modules, which import
what they need (store, engine, Prefect, MLflow, paramiko) inside each command.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from hpcfleet import cli_misc, cli_provenance, cli_results, cli_runs, cli_server, cli_sites

app = typer.Typer(
    name="hpcfleet",
    help="Federated experiment orchestration across a consortium's HPC sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Click's plain help and errors: rich's help renderer alone doubles the start-up time.
    rich_markup_mode=None,
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
cli_runs.run_app.command("provenance")(cli_provenance.provenance)
app.command("lineage")(cli_provenance.lineage)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version of hpcfleet and exit.")
    ] = False,
    json: Annotated[
        bool,
        typer.Option("--json", help="With --version: also Prefect, MLflow, paramiko, Python."),
    ] = False,
) -> None:
    if version:
        from hpcfleet.version import version_text

        typer.echo(version_text(json))
        raise typer.Exit()
    if json:
        ctx.fail("--json here goes with --version; put it after the command")
    if ctx.invoked_subcommand is None:
        ctx.fail("Missing command.")
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from flows.engine_env import configure_engines
    from flows.paths import home_from
    from registry.owner_only import secure_home

    home = home_from(os.environ)
    notice = secure_home(home)
    if notice:
        sys.stderr.write(f"hpcfleet: {notice}\n")
    configure_engines(home)


def run_cli(args: list[str]) -> int:
    """Run the command line `args`; the exit code of the contract above."""
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="hpcfleet", standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors and bad parameters
        show_usage_error(exc)
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("hpcfleet: aborted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("hpcfleet: interrupted\n")
        return 130
    except Exception as exc:
        return report_error(exc, debug)
    return result if isinstance(result, int) else 0


def show_usage_error(exc: typer.TyperException) -> None:
    """Click's usual message: usage line, hint and error (or the help of a bare group)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        # Like Click: the help of the bare group, on stderr (exit 2).
        if exc.message:
            sys.stderr.write(exc.message.rstrip("\n") + "\n")
        return
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:
        sys.stderr.write(f"Error: {exc.format_message()}\n")


def report_error(exc: Exception, debug: bool) -> int:
    import traceback

    from registry.errors import HpcfleetError
    from registry.redact import redact_urls

    if debug:
        traceback.print_exc()
    # A driver's message may quote a database or tracking URL with its password.
    message = redact_urls(str(exc))
    if isinstance(exc, HpcfleetError):
        sys.stderr.write(f"hpcfleet: {message}\n")
        return exc.exit_code
    if isinstance(exc, OSError):  # this machine's files or network, not a bug of ours
        sys.stderr.write(f"hpcfleet: {message}\n")
        return 1
    hint = "" if debug else " (run with --debug for the traceback)"
    sys.stderr.write(f"hpcfleet: internal error: {type(exc).__name__}: {message}{hint}\n")
    return 1


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))
