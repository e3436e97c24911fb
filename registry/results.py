"""The results table: per evaluation cell and metric, the value a job reported.

Read and written with SQLAlchemy Core (no ORM objects): `hpcfleet results` reads 10^5
rows at a time. A job's results are replaced as a whole, in one transaction, so that a
collection repeated after a crash never stores them twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Table, Text, delete, insert, select, type_coerce

from registry.store import Store
from registry.tables import ResultRow

_TABLE: Table = ResultRow.__table__  # type: ignore[assignment]


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



def replace_job_results(
    store: Store, run_id: str, job_id: int, results: Sequence[StoredResult]
) -> None:
    """The results of job `job_id` (a jobs row id) become `results`."""
    with store.connection() as connection:
        connection.execute(delete(_TABLE).where(_TABLE.c.job_id == job_id))
        if results:
            connection.execute(
                insert(_TABLE),
                [
                    {
                        "run_id": run_id,
                        "stage": r.stage,
                        "job_id": job_id,
                        "attempt": r.attempt,
                        "site": r.site,
                        "array_index": r.array_index,
                        "checkpoint": r.checkpoint,
                        "cell": r.cell,
                        "metric": r.metric,
                        "value": r.value,
                    }
                    for r in results
                ],
            )


def read_results(store: Store, run_id: str, stage: str | None = None) -> list[StoredResult]:
    """Every stored result of the run (or of one stage), in the order they were stored.

    A cell's JSON is decoded once however many metrics share it: 10^5 rows hold a few
    10^4 cells (the results of `results` share those dicts; nobody changes them)."""
    columns = [_TABLE.c[name] for name in ("stage", "metric", "value", "site", "attempt")]
    cell_text = type_coerce(_TABLE.c.cell, Text)
    query = select(*columns, cell_text, _TABLE.c.checkpoint, _TABLE.c.array_index)
    query = query.where(_TABLE.c.run_id == run_id)
    if stage is not None:
        query = query.where(_TABLE.c.stage == stage)
    with store.connection() as connection:
        rows = connection.execute(query.order_by(_TABLE.c.id)).all()
    cells: dict[str | None, dict[str, str]] = {}
    results = []
    for row in rows:
        cell = cells.get(row[5])
        if cell is None:
            cell = cells[row[5]] = json.loads(row[5]) if row[5] else {}
        results.append(
            StoredResult(row[0], row[1], row[2], row[3], row[4], cell, row[6] or "", row[7])
        )
    return results
