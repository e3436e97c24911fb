"""The results table: per evaluation cell and metric, the value a job reported.

Read and written with SQLAlchemy Core (no ORM objects): `hpcfleet results` reads 10^5
rows at a time. A job's results are replaced as a whole, in one transaction, so that a
collection repeated after a crash never stores them twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, Text, delete, insert, select, type_coerce

from registry.store import Store
from registry.stored_result import StoredResult as StoredResult
from registry.stored_result import stored_results
from registry.tables import ResultRow

_TABLE: Table = ResultRow.__table__  # type: ignore[assignment]


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
    """Every stored result of the run (or of one stage), in the order they were stored."""
    columns = [_TABLE.c[name] for name in ("stage", "metric", "value", "site", "attempt")]
    cell_text = type_coerce(_TABLE.c.cell, Text)
    query = select(*columns, cell_text, _TABLE.c.checkpoint, _TABLE.c.array_index)
    query = query.where(_TABLE.c.run_id == run_id)
    if stage is not None:
        query = query.where(_TABLE.c.stage == stage)
    with store.connection() as connection:
        rows = connection.execute(query.order_by(_TABLE.c.id)).all()
    return stored_results(rows)
