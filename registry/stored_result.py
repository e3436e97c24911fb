"""One stored result (a row of the results table) as the registry returns it; importable
without SQLAlchemy (`registry.listing` reads results for `run show`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredResult:
    """One (checkpoint, cell, metric) value of a stage's job."""

    stage: str
    metric: str
    value: float
    site: str
    attempt: int
    cell: dict[str, str] = field(default_factory=dict)
    checkpoint: str = ""
    array_index: int | None = None


def stored_results(rows: Iterable[Sequence[Any]]) -> list[StoredResult]:
    """Results from rows of (stage, metric, value, site, attempt, cell (JSON text, or
    decoded by the driver), checkpoint, array_index).

    A cell's JSON is decoded once however many metrics share it: 10^5 rows hold a few
    10^4 cells (the results share those dicts; nobody changes them)."""
    cells: dict[str, dict[str, str]] = {}
    return [
        StoredResult(row[0], row[1], row[2], row[3], row[4], _cell(row[5], cells),
                     row[6] or "", row[7])
        for row in rows
    ]  # fmt: skip


def _cell(raw: Any, decoded: dict[str, dict[str, str]]) -> dict[str, str]:
    if isinstance(raw, dict):  # psycopg decodes PostgreSQL's JSON itself
        return raw
    if not raw:
        return {}
    cell = decoded.get(raw)
    if cell is None:
        cell = decoded[raw] = json.loads(raw)
    return cell
