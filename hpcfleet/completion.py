"""Shell completion of site names, run ids and partner ids (bash, zsh, fish via Typer).

A completion runs on every Tab, so it must be instant and must never fail: it reads the
embedded SQLite store directly, read-only, without SQLAlchemy. With a shared
deployment (HPCFLEET_URL, or a database that is not a local SQLite file), with no store
yet, or on any error, it offers nothing.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# (value, description) queries; the tables are registry.tables'.
SITE_QUERY = "SELECT name, partner FROM sites ORDER BY name"
RUN_QUERY = "SELECT run_id, name || ' ' || state FROM runs ORDER BY created DESC LIMIT 200"
PARTNER_QUERY = "SELECT id, name FROM partners ORDER BY id"


def embedded_store_path() -> Path | None:
    """The SQLite file of the embedded store, if this CLI uses one and it exists."""
    if os.environ.get("HPCFLEET_URL"):
        return None
    from flows.settings import Settings

    url = Settings().store_url
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.is_file() else None


def candidates(query: str, incomplete: str) -> list[tuple[str, str]]:
    """Rows of `query` whose value starts with `incomplete`; [] whenever anything fails."""
    try:
        path = embedded_store_path()
        if path is None:
            return []
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            rows = connection.execute(query).fetchall()
        finally:
            connection.close()
    except Exception:  # completion must never break the user's shell
        return []
    found = [(str(value), str(text or "")) for value, text in rows]
    return [(value, text) for value, text in found if value.startswith(incomplete)]


def complete_sites(incomplete: str) -> list[tuple[str, str]]:
    return candidates(SITE_QUERY, incomplete)


def complete_runs(incomplete: str) -> list[tuple[str, str]]:
    return candidates(RUN_QUERY, incomplete)


def complete_partners(incomplete: str) -> list[tuple[str, str]]:
    return candidates(PARTNER_QUERY, incomplete)
