"""Checkpoints streaming out of a running stage: watched while it runs, recorded once.

Step of a run's life: while a stage that declares `checkpoints` runs, the watcher of
each of its sites lists them in its one poll (`flows.watcher`, `sites.checkpoints`);
each new one is recorded here (registry.checkpoints, once per run, stage and name),
noted on the MLflow parent run (one request: the tags `checkpoints/<name>` and
`hpcfleet.checkpoint.latest`), and wakes the `for_each: checkpoint` stages
(`flows.for_each`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from flows.context import RunContext
from registry.checkpoints import new_checkpoint, record_checkpoint
from registry.errors import HpcfleetError
from sites.checkpoints import CheckpointWatch, FoundCheckpoint

log = logging.getLogger(__name__)

LATEST_TAG = "hpcfleet.checkpoint.latest"


def checkpoint_tag(name: str) -> str:
    """The parent run's tag of checkpoint `name`; its value is a small JSON object."""
    return f"checkpoints/{name}"


@contextmanager
def watching_checkpoints(ctx: RunContext, name: str) -> Iterator[None]:
    """While the body runs, the checkpoints of stage `name` (if it declares any) are
    looked for in every poll of its sites."""
    declared = ctx.spec.stage(name).checkpoints
    if declared is None:
        yield
        return
    key = f"{ctx.run_id}/{name}"
    watched = []
    for site in ctx.plans[name].sites:
        watcher = ctx.watchers.get(ctx.driver(site))
        watch = CheckpointWatch(
            ctx.layout(site, name).outputs, declared.parent, declared.pattern, declared.ready
        )
        watcher.watch_checkpoints(key, watch, partial(on_checkpoint, ctx, name, site))
        watched.append(watcher)
    try:
        yield
    finally:
        for watcher in watched:
            watcher.unwatch_checkpoints(key)


def on_checkpoint(ctx: RunContext, stage: str, site: str, found: FoundCheckpoint) -> None:
    """Record a checkpoint the watcher found (nothing if it was recorded before)."""
    assert found.sha256 is not None  # the watcher hands over hashed checkpoints only
    record = record_checkpoint(
        ctx.store,
        ctx.run_id,
        new_checkpoint(stage, found.name, found.path, site, found.size, found.sha256),
    )
    if record is None:
        return
    log.info("stage %s: checkpoint %s ready on %s", stage, found.name, site)
    entry = {
        "stage": stage,
        "path": found.path,
        "site": site,
        "size": found.size,
        "sha256": found.sha256,
        "found": record.found.isoformat(),
    }
    try:
        with ctx.parent_lock:
            ctx.tracker.set_tags(
                ctx.parent_mlflow_id,
                {
                    checkpoint_tag(found.name): json.dumps(entry, sort_keys=True),
                    LATEST_TAG: found.name,
                },
            )
    except HpcfleetError as exc:  # recorded in the store; MLflow only misses a note
        log.warning("could not note checkpoint %s in MLflow: %s", found.name, exc)
    ctx.note_change()
