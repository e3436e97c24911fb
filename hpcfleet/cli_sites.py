"""`hpcfleet site ...`: register, list, show, remove, trust and check sites."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet import display
from hpcfleet.common import AsOption, JsonOption, acting_partner, open_store, settings
from hpcfleet.completion import complete_sites

if TYPE_CHECKING:
    from registry.records import ProbeRecord

SiteName = Annotated[str, typer.Argument(metavar="NAME", autocompletion=complete_sites)]

site_app = typer.Typer(help="Register and inspect compute sites.", no_args_is_help=True)


@site_app.command("add")
def add(file: Path, as_partner: AsOption = None) -> None:
    """Validate a site document, check ownership, and store it (update if same owner)."""
    from registry.loading import load_document
    from registry.site import Site

    site = load_document(file, Site)
    store = open_store()
    actor = acting_partner(store, as_partner)
    new = store.put_site(site, actor)
    display.err.print(f"site {site.name} {'added' if new else 'updated'} (partner {site.partner})")


@site_app.command("list")
def list_sites(json: JsonOption = False) -> None:
    """List registered sites."""
    from rich.table import Table

    store = open_store()
    records = store.list_sites()
    if json:
        display.print_json([r.site.model_dump(mode="json") for r in records])
        return
    probes = store.latest_probes()
    table = Table()
    for column in ("site", "partner", "scheduler", "login", "shared with", "last check"):
        table.add_column(column)
    for record in records:
        site = record.site
        probe = probes.get(site.name)
        login = (
            f"{site.ssh.user + '@' if site.ssh and site.ssh.user else ''}{site.ssh.host}"
            if site.ssh
            else "this machine"
        )
        table.add_row(
            site.name,
            site.partner,
            site.scheduler,
            login,
            ", ".join(site.shared_with) or "-",
            _probe_text(probe),
        )
    display.out.print(table)


def _probe_text(probe: ProbeRecord | None) -> str:
    if probe is None:
        return "never"
    verdict = "ok" if probe.ok else ("unreachable" if not probe.reachable else "problems")
    return f"{verdict} at {probe.checked_at:%Y-%m-%d %H:%M}Z"


@site_app.command("show")
def show(name: SiteName, json: JsonOption = False) -> None:
    """Show one site's document."""
    record = open_store().get_site(name)
    if json:
        display.print_json(record.site.model_dump(mode="json"))
        return
    import yaml

    display.out.print(
        yaml.safe_dump(
            record.site.model_dump(mode="json", exclude_none=True), sort_keys=False
        ).rstrip()
    )


@site_app.command("remove")
def remove(name: SiteName, as_partner: AsOption = None) -> None:
    """Remove a site (only its owner may)."""
    store = open_store()
    store.remove_site(name, acting_partner(store, as_partner))
    display.err.print(f"site {name} removed")


@site_app.command("trust")
def trust(
    name: SiteName,
    yes: Annotated[bool, typer.Option("--yes", help="Pin without asking.")] = False,
    as_partner: AsOption = None,
) -> None:
    """Show the server's host key fingerprint and pin it in the site document."""
    from registry.site import Site
    from sites.probe import trust_site

    store = open_store()
    actor = acting_partner(store, as_partner)
    site = store.get_site(name).site
    key_line, fingerprint = trust_site(site)
    display.out.print(f"site {name}: host key {key_line.split()[0]} {fingerprint}")
    if site.ssh is not None and site.ssh.host_key == key_line:
        display.out.print("already pinned")
        return
    if not yes and not typer.confirm("Pin this host key?", default=False):
        raise typer.Exit(1)
    assert site.ssh is not None
    pinned = site.model_copy(update={"ssh": site.ssh.model_copy(update={"host_key": key_line})})
    store.put_site(Site.model_validate(pinned.model_dump()), actor)
    display.out.print(f"pinned {fingerprint} for site {name}")


@site_app.command("usage")
def usage(
    name: Annotated[
        str | None,
        typer.Argument(help="One site (default: all).", autocompletion=complete_sites),
    ] = None,
    json: JsonOption = False,
) -> None:
    """GPU-hours used per partner vs granted, with the burn-rate forecast to the period's end."""
    from rich.table import Table

    from flows.launch import usage_by_site

    store = open_store()
    if name is not None:
        store.get_site(name)
    ledger = usage_by_site(store, [name] if name else None)
    if json:
        display.print_json([u.as_dict() for u in ledger.values()])
        return
    table = Table()
    for column in ("site", "granted", "used", "remaining", "burn/day", "forecast", "by partner"):
        table.add_column(column)
    for u in ledger.values():
        forecast = "-" if u.forecast is None else f"{u.forecast:,.1f}"
        if u.over_forecast:
            forecast = f"[red]{forecast} (over)[/]"
        table.add_row(
            u.site,
            "-" if u.granted is None else f"{u.granted:,.0f}",
            f"{u.used:,.2f}",
            "-" if u.remaining is None else f"{u.remaining:,.1f}",
            f"{u.burn_per_day:,.2f}",
            forecast,
            ", ".join(f"{p} {h:,.2f}" for p, h in sorted(u.by_partner.items())) or "-",
        )
    display.out.print(table)


@site_app.command("check")
def check(name: SiteName, json: JsonOption = False) -> None:
    """Probe a site: login, host key, scheduler, partitions, account, work dir."""
    from rich.table import Table

    from sites.driver import DriverPool
    from sites.probe import probe_site

    store = open_store()
    site = store.get_site(name).site
    pool = DriverPool(settings().home / "sites")
    try:
        result = probe_site(site, pool)
    finally:
        pool.close()
    store.add_probe(result.record())
    if json:
        display.print_json(result.as_dict())
    else:
        table = Table(title=f"site {name}")
        for column in ("check", "result", "detail"):
            table.add_column(column)
        for item in result.checks:
            table.add_row(item.name, "[green]ok[/]" if item.ok else "[red]FAILED[/]", item.detail)
        display.out.print(table)
    if not result.reachable:
        raise typer.Exit(4)
    if not result.ok:
        raise typer.Exit(1)
