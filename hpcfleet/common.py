"""What every CLI command shares: settings, the store, the acting partner, options.

Import-light: `hpcfleet --help` loads this module, so settings and the store are
imported by the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet.completion import complete_partners

if TYPE_CHECKING:
    from flows.settings import Settings
    from registry.store import Store

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this partner (default: $HPCFLEET_PARTNER).",
        show_default=False,
        autocompletion=complete_partners,
    ),
]


def settings() -> Settings:
    from flows.settings import Settings

    return Settings()


def open_store() -> Store:
    from registry.store import Store

    return Store.open(settings().store_url)


def acting_partner(store: Store, as_partner: str | None) -> str:
    """The partner the CLI acts as: --as, else HPCFLEET_PARTNER; it must be registered."""
    from registry.errors import DocumentError

    partner = as_partner or settings().partner
    if not partner:
        raise DocumentError("no acting partner: pass --as PARTNER or set HPCFLEET_PARTNER")
    store.get_partner(partner)
    return partner
