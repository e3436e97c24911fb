"""An evaluation's cell results in MLflow, one child run per (stage, checkpoint).

The run-level picture of a checkpoint's evaluation is a few hundred to a few thousand
cells; one child run per job says little about it. So, besides the per-job children,
each (evaluation stage, checkpoint) gets one child run of the hpcfleet run's parent,
tagged `hpcfleet.stage`, `hpcfleet.checkpoint` and `hpcfleet.results=checkpoint`, with
every cell's value as the metric `<metric>/<task>/<language>/<n_shot>` (other keys of
the cell after those) at step = attempt, so that a refilled cell's newer attempt is the
value MLflow shows.

Metrics rather than a table artifact: they need no download to compare checkpoints in
MLflow's UI, and cost the same: a checkpoint's results go in `log_batch` requests of
at most 1,000, so a collection round sends one request per 1,000 results of a
checkpoint; creating the child run (tags included) and ending it are one request each,
once per checkpoint. The first time a process logs for a stage, it logs everything the
store holds for that stage instead of the new results only: a resumed orchestrator so
catches up on what a crash between marking jobs collected and logging them left out
(the same value at the same step again), and it finds the children it made (one search
per stage) instead of making them again.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from flows.metrics import MetricPoint, parent_cell_key
from flows.tracking import Tracker
from registry.results import StoredResult, read_results
from registry.store import Store

CHECKPOINT_TAG = "hpcfleet.checkpoint"
RESULTS_TAG = "hpcfleet.results"
RESULTS_KIND = "checkpoint"
KEY_ORDER = ("task", "language", "n_shot")  # the issue's `<metric>/<task>/<language>/<n_shot>`
MAX_RUN_NAME = 250


def cell_key(metric: str, cell: Mapping[str, str]) -> str:
    """`acc/belebele/fi/5`: the metric, then the cell's task, language and n_shot (those it
    has), then its other keys in the order the cell lists them; escaped as MLflow needs."""
    ordered = [k for k in KEY_ORDER if k in cell] + [k for k in cell if k not in KEY_ORDER]
    return parent_cell_key(metric, [cell[k] for k in ordered])


def checkpoint_points(results: Iterable[StoredResult]) -> dict[tuple[str, str], list[MetricPoint]]:
    """{(stage, checkpoint): points}, one point per (cell, metric) at step = attempt; the
    latest attempt of a cell wins when a batch holds several. Results without a
    checkpoint are not an evaluation of one and are left out."""
    latest: dict[tuple[str, str], dict[str, MetricPoint]] = defaultdict(dict)
    for r in results:
        if not r.checkpoint:
            continue
        key = cell_key(r.metric, r.cell)
        points = latest[(r.stage, r.checkpoint)]
        known = points.get(key)
        if known is None or known.step <= r.attempt:
            points[key] = MetricPoint(key, r.value, step=r.attempt)
    return {where: list(points.values()) for where, points in latest.items()}


def run_name(stage: str, checkpoint: str) -> str:
    name = f"{stage} @ {checkpoint}"
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 1] + "…"


@dataclass
class CheckpointRuns:
    """The checkpoint child runs of one hpcfleet run, made once each and remembered."""

    store: Store
    tracker: Tracker
    experiment_id: str
    parent_mlflow_id: str
    base_tags: Mapping[str, str]  # hpcfleet.run_id, partner, flow run
    _known: dict[str, dict[str, str]] = field(default_factory=dict)  # stage -> checkpoint -> id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, stage: str, results: Sequence[StoredResult]) -> int:
        """Log the newly stored `results` of `stage` to their checkpoints' child runs (all
        of the stage's stored results, the first time); returns how many points."""
        if not any(r.checkpoint for r in results):
            return 0  # not an evaluation of checkpoints: no request at all
        with self._lock:
            if stage not in self._known:
                self._known[stage] = self._search(stage)
                results = read_results(self.store, self.base_tags["hpcfleet.run_id"], stage)
        logged = 0
        for (name, checkpoint), points in checkpoint_points(results).items():
            with self._lock:  # two collections of a stage must not both create its child
                child, created = self._child(name, checkpoint)
            self.tracker.log_metrics(child, points)
            if created:
                self.tracker.finish(child, "FINISHED")
            logged += len(points)
        return logged

    def _child(self, stage: str, checkpoint: str) -> tuple[str, bool]:
        known = self._known.setdefault(stage, {})
        child = known.get(checkpoint)
        if child is not None:
            return child, False
        tags = {
            **self.base_tags,
            "hpcfleet.stage": stage,
            CHECKPOINT_TAG: checkpoint,
            RESULTS_TAG: RESULTS_KIND,
        }
        child = self.tracker.start_run(
            self.experiment_id, run_name(stage, checkpoint), tags, parent=self.parent_mlflow_id
        )
        known[checkpoint] = child
        return child, True

    def _search(self, stage: str) -> dict[str, str]:
        run_id = self.base_tags["hpcfleet.run_id"]
        runs = self.tracker.search(
            self.experiment_id,
            f"tags.`hpcfleet.run_id` = '{run_id}' AND tags.`hpcfleet.stage` = '{stage}' "
            f"AND tags.`{RESULTS_TAG}` = '{RESULTS_KIND}'",
        )
        return {
            run.data.tags[CHECKPOINT_TAG]: str(run.info.run_id)
            for run in runs
            if CHECKPOINT_TAG in run.data.tags
        }
