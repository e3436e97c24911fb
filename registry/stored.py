"""Reading stored documents back, one row at a time.

A stored document is validated again when read (the models may have tightened since it
was written). One that fails is that row's problem only: listings leave it out and name
it (`Scan.broken`), reading it by name is a DocumentError naming it (exit 2), and its
owner can still remove it, since removal reads only the owner column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel

from registry.errors import DocumentError
from registry.listing import BrokenRow
from registry.loading import validate_document

log = logging.getLogger("registry.store")
M = TypeVar("M", bound=BaseModel)
Row = TypeVar("Row")
Record = TypeVar("Record")


class Scan(NamedTuple, Generic[Record]):
    """The readable records of a listing, and the rows left out."""

    records: list[Record]
    broken: list[BrokenRow]

    def logged(self) -> list[Record]:
        """The records; each row left out is logged as a warning."""
        for row in self.broken:
            log.warning("%s", row.warning())
        return self.records


def validate_stored(data: Any, model: type[M], kind: str, name: str) -> M:
    """Validate a stored document; DocumentError (exit 2) naming the row if it fails."""
    return validate_document(data, model, source=f"stored {kind} {name!r}")


def scan(
    rows: Iterable[Row],
    record: Callable[[Row], Record],
    names: Callable[[Row], tuple[str, str, str]],
) -> Scan[Record]:
    """`record(row)` for every row; a row that fails is reported as (kind, name, owner)."""
    records: list[Record] = []
    broken: list[BrokenRow] = []
    for row in rows:
        try:
            records.append(record(row))
        except DocumentError as exc:
            kind, name, owner = names(row)
            problem = str(exc).removeprefix(f"{exc.source}: ") if exc.source else str(exc)
            broken.append(BrokenRow(kind, name, owner, problem))
    return Scan(records, broken)
