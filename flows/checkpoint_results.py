"""An evaluation's cell results in MLflow, one child run per (stage, checkpoint).

The run-level picture of a checkpoint's evaluation is a few hundred to 10^4 cells; one
child run per job says little about it. So, besides the per-job children, each
(evaluation stage, checkpoint) gets one child run of the hpcfleet run's parent, tagged
`hpcfleet.stage`, `hpcfleet.checkpoint` and `hpcfleet.results=checkpoint`, holding:

- `results.csv`: every cell's latest result for that checkpoint, in the columns of
  `hpcfleet results --format csv`;
- summary metrics `mean/<metric>` and `cells/<metric>` over those cells;
- each cell's value as the metric `<metric>/<task>/<language>/<n_shot>` (other keys of
  the cell after those) while they fit in the same request as the summaries (≤ 1,000
  metrics in all: a few hundred cells of a few metrics), so small evaluations can be
  compared in MLflow's own UI without a download.

Why a table and not always one metric per cell: MLflow takes at most 1,000 metrics per
request, so per-cell metrics cost at least one request per 1,000 results; the table
costs one upload per collection round whatever the size. A round (one site's batch of
an attempt, `flows.collect.collect_attempt`) sends, per checkpoint it touched, the
table and one `log_batch`; making the child (tags included) and ending it are one
request each, once. Every round rewrites the checkpoint's table and summaries from what
the registry holds, so a round repeated after a crash, or by a resumed orchestrator
(which finds its children with one search per stage instead of making new ones), leaves
the same picture.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flows.metrics import MetricPoint, parent_cell_key
from flows.results import columns_for, render_csv, result_rows
from flows.tracking import BATCH_LIMIT, Tracker
from registry.results import StoredResult, read_results
from registry.store import Store

CHECKPOINT_TAG = "hpcfleet.checkpoint"
RESULTS_TAG = "hpcfleet.results"
RESULTS_KIND = "checkpoint"
TABLE_NAME = "results.csv"
KEY_ORDER = ("task", "language", "n_shot")  # the issue's `<metric>/<task>/<language>/<n_shot>`
MAX_RUN_NAME = 250
# MLflow refuses longer tag values (5,000 characters before 2.x, 8,000 since); the name
# comes from a job's result line, so a longer one is skipped, not allowed to fail the run.
MAX_CHECKPOINT_NAME = 5000

log = logging.getLogger(__name__)


def cell_key(metric: str, cell: Mapping[str, str]) -> str:
    """`acc/belebele/fi/5`: the metric, then the cell's task, language and n_shot (those it
    has), then its other keys in the order the cell lists them; escaped as MLflow needs."""
    ordered = [k for k in KEY_ORDER if k in cell] + [k for k in cell if k not in KEY_ORDER]
    return parent_cell_key(metric, [cell[k] for k in ordered])


def latest_by_checkpoint(
    results: Iterable[StoredResult],
) -> dict[str, list[StoredResult]]:
    """{checkpoint: the latest attempt's result of each (cell, metric)}, in stored order.
    Results without a checkpoint are not an evaluation of one and are left out."""
    latest: dict[str, dict[tuple[str, str], StoredResult]] = defaultdict(dict)
    for r in results:
        if not r.checkpoint:
            continue
        identity = (cell_key(r.metric, r.cell), r.metric)
        known = latest[r.checkpoint].get(identity)
        if known is None or known.attempt <= r.attempt:
            latest[r.checkpoint][identity] = r
    return {checkpoint: list(cells.values()) for checkpoint, cells in latest.items()}


def checkpoint_points(results: Sequence[StoredResult]) -> list[MetricPoint]:
    """The summaries of one checkpoint's latest results, then, if all fit in one request,
    one point per (cell, metric) at step = attempt."""
    by_metric: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_metric[r.metric].append(r.value)
    points = [
        point
        for metric, values in sorted(by_metric.items())
        for point in (
            MetricPoint(f"mean/{metric}", sum(values) / len(values)),
            MetricPoint(f"cells/{metric}", float(len(values))),
        )
    ]
    if len(points) + len(results) <= BATCH_LIMIT:
        points += [
            MetricPoint(cell_key(r.metric, r.cell), r.value, step=r.attempt) for r in results
        ]
    return points


def results_table(results: Sequence[StoredResult]) -> str:
    """`results.csv`: the columns of `hpcfleet results --format csv`."""
    columns = columns_for(results)
    return render_csv(columns, result_rows(columns, results))


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
        """Bring the children of the checkpoints that the newly stored `results` of
        `stage` name up to date with the registry; returns how many cells they hold."""
        touched = {r.checkpoint for r in results if r.checkpoint}
        for name in [c for c in touched if len(c) > MAX_CHECKPOINT_NAME]:
            log.warning(
                "checkpoint %r...: name longer than %d characters, not logged to MLflow",
                name[:60],
                MAX_CHECKPOINT_NAME,
            )
            touched.discard(name)
        if not touched:
            return 0  # not an evaluation of checkpoints: no request at all
        stored = read_results(self.store, self.base_tags["hpcfleet.run_id"], stage)
        logged = 0
        with tempfile.TemporaryDirectory(prefix="hpcfleet-checkpoint-") as scratch:
            for checkpoint, latest in latest_by_checkpoint(stored).items():
                if checkpoint not in touched:
                    continue
                with self._lock:  # two collections of a stage must not both create it
                    child, created = self._child(stage, checkpoint)
                table = Path(scratch) / TABLE_NAME  # uploaded before it is rewritten
                table.write_text(results_table(latest))
                self.tracker.log_artifact(child, table)
                self.tracker.log_metrics(child, checkpoint_points(latest))
                if created:
                    self.tracker.finish(child, "FINISHED")
                touched.discard(checkpoint)
                logged += len(latest)
        return logged

    def _child(self, stage: str, checkpoint: str) -> tuple[str, bool]:
        if stage not in self._known:
            self._known[stage] = self._search(stage)
        known = self._known[stage]
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
