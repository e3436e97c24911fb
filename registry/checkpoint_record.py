"""A recorded checkpoint, importable without SQLAlchemy (`registry.listing` reads them for
`run show`; `registry.checkpoints` stores them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

CHECKPOINT_COLUMNS = ("stage", "name", "path", "site", "size", "sha256", "found")


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A finished checkpoint: `path` relative to the outputs of `stage` on `site`."""

    stage: str
    name: str
    path: str
    site: str
    size: int  # of its ready file
    sha256: str  # of its ready file
    found: datetime


_DIGITS = re.compile(r"\d+")


def checkpoint_step(name: str) -> int | None:
    """A checkpoint's training step, the last number in its name: `iter_0002000` -> 2000;
    None for a name without digits."""
    found = _DIGITS.findall(name)
    return int(found[-1]) if found else None
