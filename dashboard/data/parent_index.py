"""Every hpcfleet parent run in MLflow, kept current without re-reading them all.

Reading thousands of parent runs with their per-language results takes seconds (about
5 s for 5,000 runs and 65,000 results on a 2-core machine), too slow to repeat at every
refresh of a live page. A finished parent run no longer changes, so after the first
full read a sync asks only for the runs still open and those that ended since the last
sync (a few milliseconds). A full read every `FULL_SYNC_SECONDS` drops deleted runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dashboard.data.queries import PARENT_FILTER, SEARCH_PAGE, mlflow_errors

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

FULL_SYNC_SECONDS = 600.0
CLOCK_SLACK_MS = 5 * 60 * 1000  # orchestrators' clocks may lag the dashboard's


class ParentRunIndex:
    """Thread-safe: the dashboard's sessions share one index per tracking URI."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, Any] = {}
        self._experiments: dict[str, str] = {}
        self._synced_ms: int | None = None
        self._full_at = 0.0

    def sync(self, client: MlflowClient) -> tuple[list[Any], dict[str, str]]:
        """(every parent run, experiment id -> name), brought up to date."""
        with self._lock, mlflow_errors("search runs"):
            now = self._clock()
            self._experiments = {str(e.experiment_id): str(e.name)
                                 for e in client.search_experiments()}
            ids = list(self._experiments)
            if not ids:
                self._runs = {}
            elif self._synced_ms is None or now - self._full_at >= FULL_SYNC_SECONDS:
                self._runs = {r.info.run_id: r for r in _search(client, ids, PARENT_FILTER)}
                self._full_at = now
            else:
                since = self._synced_ms - CLOCK_SLACK_MS
                for extra in (f"attributes.end_time >= {since}", "attributes.status = 'RUNNING'"):
                    for run in _search(client, ids, f"{PARENT_FILTER} AND {extra}"):
                        self._runs[run.info.run_id] = run
            self._synced_ms = int(now * 1000)
            return list(self._runs.values()), dict(self._experiments)


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string,
                                  max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
