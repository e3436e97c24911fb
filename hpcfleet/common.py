"""What every CLI command shares: settings, the store, the acting partner, options.

Import-light: `hpcfleet --help` loads this module, so settings and the store are
imported by the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from hpcfleet.completion import complete_partners

if TYPE_CHECKING:
    from flows.settings import Settings
    from registry.listing import Listing
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


def store_url() -> str:
    """`settings().store_url`, without importing pydantic-settings (a quarter of a
    listing's time): HPCFLEET_DATABASE_URL, else registry.db under HPCFLEET_HOME. Like
    the settings, the names are matched regardless of case."""
    from flows.paths import home_path, store_url_for

    return store_url_for(home_path(_setting("HPCFLEET_HOME")), _setting("HPCFLEET_DATABASE_URL"))


def partner_setting() -> str | None:
    """`settings().partner` (HPCFLEET_PARTNER) without importing pydantic-settings."""
    return _setting("HPCFLEET_PARTNER") or None


def _setting(name: str) -> str | None:
    if name in os.environ:
        return os.environ[name]
    return next((v for k, v in os.environ.items() if k.upper() == name), None)


@contextmanager
def open_listing() -> Iterator[Listing]:
    """The store's light read path for listings (`registry.listing`); a store that is
    not at the current schema is opened as a `Store` first, which migrates it or says
    why it cannot."""
    from registry.listing import open_listing as light

    url = store_url()
    with light(url) as listing:
        if listing is not None:
            yield listing
            return
    open_store().close()
    with light(url) as listing:
        if listing is None:
            from registry.errors import StoreError

            raise StoreError("store error: the registry's schema changed while it was read")
        yield listing


def acting_partner(store: Store, as_partner: str | None) -> str:
    """The partner the CLI acts as: --as, else HPCFLEET_PARTNER; it must be registered."""
    from registry.errors import DocumentError

    partner = as_partner or settings().partner
    if not partner:
        raise DocumentError("no acting partner: pass --as PARTNER or set HPCFLEET_PARTNER")
    store.get_partner(partner)
    return partner
