"""`hpcfleet site ...`: register, list, show, remove, trust and check sites."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpcfleet import display
from hpcfleet.common import (
    AsOption,
    JsonOption,
    acting_partner,
    open_listing,
    open_store,
    partner_setting,
    settings,
)
from hpcfleet.completion import complete_sites
from registry.redact import masked_env, redact_url, shows_values

if TYPE_CHECKING:
    from registry.listing import ProbeSummary
    from registry.site import Site

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
def list_sites(json: JsonOption = False, as_partner: AsOption = None) -> None:
    """List registered sites (env values only to the site's own partner)."""
    from rich.table import Table

    from registry.listing import scan_sites
    from registry.loading import validate_document
    from registry.site import Site

    with open_listing() as listing:
        rows, probes = listing.sites(), listing.latest_probes()
    sites, broken = scan_sites(
        rows, lambda row: validate_document(row.document, Site, source=f"stored site {row.name!r}")
    )
    for row in broken:  # one partner's unreadable document hides nobody else's site
        display.err.print(
            f"warning: {row.warning()}; its owner can 'hpcfleet site remove {row.name}'",
            markup=False,
            soft_wrap=True,
        )
    if json:
        viewer = as_partner or partner_setting()
        display.print_json([shown_site(site, viewer) for site in sites])
        return
    table = Table()
    for column in ("site", "partner", "scheduler", "login", "shared with", "last check"):
        table.add_column(column)
    for site in sites:
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


def _probe_text(probe: ProbeSummary | None) -> str:
    if probe is None:
        return "never"
    verdict = "ok" if probe.ok else ("unreachable" if not probe.reachable else "problems")
    return f"{verdict} at {probe.checked_at:%Y-%m-%d %H:%M}Z"


def shown_site(site: Site, viewer: str | None, *, exclude_none: bool = False) -> dict[str, Any]:
    """The site document as `viewer` may see it: the values of `environment.env` only
    for the site's own partner (others see the names), URLs without passwords."""
    data = site.model_dump(mode="json", exclude_none=exclude_none)
    if not shows_values(viewer, site.partner):
        data["environment"]["env"] = masked_env(site.environment.env)
    s3 = (data.get("storage") or {}).get("s3") or {}
    if s3.get("endpoint"):
        s3["endpoint"] = redact_url(s3["endpoint"])
    return data


@site_app.command("show")
def show(
    name: SiteName,
    json: JsonOption = False,
    as_partner: AsOption = None,
    resolved: Annotated[
        bool, typer.Option("--resolved", help="The effective SSH connection, like `ssh -G`.")
    ] = False,
) -> None:
    """Show one site's document (env values only to the site's own partner), or with
    --resolved the SSH connection it makes."""
    site = open_store().get_site(name).site
    if resolved:
        _show_resolved(site, json)
        return
    viewer = as_partner or settings().partner
    if json:
        display.print_json(shown_site(site, viewer))
        return
    import yaml

    shown = shown_site(site, viewer, exclude_none=True)
    display.out.print(
        yaml.safe_dump(shown, sort_keys=False).rstrip(), highlight=False, markup=False
    )
    if site.environment.env and not shows_values(viewer, site.partner):
        display.err.print(
            f"(env values are shown to partner {site.partner} only: --as {site.partner})"
        )


def _show_resolved(site: Site, json: bool) -> None:
    from sites.errors import SiteError
    from sites.ssh.resolved import render_resolved
    from sites.ssh.transport import resolved_connection

    if site.ssh is None:
        raise SiteError(site.name, "has no 'ssh:' section: it runs on this machine")
    connection = resolved_connection(site.name, site.ssh)
    if json:
        display.print_json(connection)
    else:
        display.out.print(render_resolved(connection), markup=False, highlight=False)


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
    """Show the host key fingerprint of every login node behind the site's host name
    and pin them (several: `ssh.host_keys`) in the site document."""
    from sites.probe import trust_site_keys

    store = open_store()
    actor = acting_partner(store, as_partner)
    site = store.get_site(name).site
    found = trust_site_keys(site)
    for key_line, fingerprint, address in found:
        display.out.print(f"site {name}: host key {key_line.split()[0]} {fingerprint} ({address})")
    assert site.ssh is not None
    lines = [key_line for key_line, _, _ in found]
    if set(lines) <= {site.ssh.host_key, *site.ssh.host_keys}:
        display.out.print("already pinned")
        return
    question = "Pin this host key?" if len(lines) == 1 else f"Pin these {len(lines)} host keys?"
    if not yes and not typer.confirm(question, default=False):
        raise typer.Exit(1)
    store.put_site(_with_pinned_keys(site, lines), actor)
    display.out.print(f"pinned {', '.join(fp for _, fp, _ in found)} for site {name}")


def _with_pinned_keys(site: Site, lines: list[str]) -> Site:
    """One key: `host_key`, as before; several (round-robin login nodes): `host_keys`."""
    from registry.site import Site

    assert site.ssh is not None
    several = len(lines) > 1
    keys = {"host_key": None if several else lines[0], "host_keys": lines if several else []}
    pinned = site.model_copy(update={"ssh": site.ssh.model_copy(update=keys)})
    return Site.model_validate(pinned.model_dump())


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
