"""The checkpoints table: the finished checkpoints of a run's stages, each recorded once.

`record_checkpoint` is idempotent by (run, stage, name): a resumed or requeued training
job that writes (or rewrites) a checkpoint already recorded changes nothing, so nothing
that was started for it is started again.
"""

from __future__ import annotations

from sqlalchemy import Table, insert, select

from registry.checkpoint_record import CHECKPOINT_COLUMNS as _COLUMNS
from registry.checkpoint_record import CheckpointRecord, checkpoint_step
from registry.store import Store, now
from registry.tables import CheckpointRow

_TABLE: Table = CheckpointRow.__table__  # type: ignore[assignment]

__all__ = ["CheckpointRecord", "checkpoint_step", "read_checkpoints", "record_checkpoint"]


def record_checkpoint(
    store: Store, run_id: str, checkpoint: CheckpointRecord
) -> CheckpointRecord | None:
    """Record `checkpoint`; None if one of that name was recorded for the stage before
    (the first one seen stays)."""
    row = {name: getattr(checkpoint, name) for name in _COLUMNS}
    # The unique constraint backs this up; one orchestrator drives a run, so the check
    # and the insert do not race in practice.
    recorded = select(_TABLE.c.id).where(
        _TABLE.c.run_id == run_id,
        _TABLE.c.stage == checkpoint.stage,
        _TABLE.c.name == checkpoint.name,
    )
    with store.connection() as connection:
        if connection.execute(recorded).first() is not None:
            return None
        connection.execute(insert(_TABLE), [{"run_id": run_id, **row}])
    return checkpoint


def read_checkpoints(store: Store, run_id: str, stage: str | None = None) -> list[CheckpointRecord]:
    """The run's (or one stage's) checkpoints, in the order they were found."""
    query = select(*(_TABLE.c[name] for name in _COLUMNS)).where(_TABLE.c.run_id == run_id)
    if stage is not None:
        query = query.where(_TABLE.c.stage == stage)
    with store.connection() as connection:
        rows = connection.execute(query.order_by(_TABLE.c.id)).all()
    return [CheckpointRecord(*row) for row in rows]


def new_checkpoint(
    stage: str, name: str, path: str, site: str, size: int, sha256: str
) -> CheckpointRecord:
    """A checkpoint found now."""
    return CheckpointRecord(stage, name, path, site, size, sha256, now())
