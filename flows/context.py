"""Everything one run's stages share while the orchestrator drives them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.checkpoint_results import CheckpointRuns
from flows.layout import StageLayout
from flows.planning import StagePlan
from flows.tracking import Tracker
from flows.watcher import WatcherPool
from registry.records import RunRecord
from registry.runspec import RunSpec
from registry.site import Site
from registry.store import Store
from sites.driver import DriverPool, SiteDriver

CANCEL_READ_SECONDS = 1.0


@dataclass
class StageProgress:
    """What other stages may wait for: the current attempt's jobs, and the end."""

    attempt: int = 0
    job_ids: dict[str, list[str]] = field(default_factory=dict)  # site -> scheduler ids
    final: bool = False


@dataclass
class RunContext:
    store: Store
    run: RunRecord
    plans: dict[str, StagePlan]
    drivers: DriverPool
    watchers: WatcherPool
    tracker: Tracker
    experiment_id: str
    parent_mlflow_id: str
    files: dict[str, tuple[bytes, int]]
    sites: dict[str, Site]  # the sites this run uses, as registered when it started
    scratch: Path  # local directory for fetched logs and relayed data
    flow_run_id: str | None = None
    parent_lock: threading.Lock = field(default_factory=threading.Lock)
    chained: set[str] = field(default_factory=set)
    progress: dict[str, StageProgress] = field(default_factory=dict)
    _progress_changed: threading.Condition = field(default_factory=threading.Condition)
    _submit_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _cancel_read: tuple[float, bool] = (float("-inf"), False)  # (monotonic time, flag)
    _checkpoint_runs: CheckpointRuns | None = None

    def submit_lock(self, site: str) -> threading.Lock:
        """Held from the queue-limit check until the new jobs are recorded."""
        with self.parent_lock:
            return self._submit_locks.setdefault(site, threading.Lock())

    def note_submitted(self, stage: str, attempt: int, site: str, job_ids: list[str]) -> None:
        with self._progress_changed:
            progress = self.progress.setdefault(stage, StageProgress())
            if progress.attempt != attempt:
                progress.attempt, progress.job_ids = attempt, {}
            progress.job_ids[site] = job_ids
            self._progress_changed.notify_all()

    def note_final(self, stage: str) -> None:
        with self._progress_changed:
            self.progress.setdefault(stage, StageProgress()).final = True
            self._progress_changed.notify_all()

    def note_change(self) -> None:
        """Something a `for_each` stage waits for happened (a checkpoint was recorded,
        the work on one ended)."""
        with self._progress_changed:
            self._progress_changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until `note_change`, `note_final` or `note_submitted`, or `timeout`."""
        with self._progress_changed:
            self._progress_changed.wait(timeout)

    def wait_for_needs(self, needs: list[str], *, final: bool) -> dict[str, StageProgress]:
        """Block until every need has submitted its jobs (or, with `final`, has ended)."""

        def ready() -> bool:
            for need in needs:
                progress = self.progress.get(need)
                if progress is None or not (progress.final or (progress.job_ids and not final)):
                    return False
            return True

        with self._progress_changed:
            self._progress_changed.wait_for(ready)
            return {
                need: StageProgress(p.attempt, dict(p.job_ids), p.final)
                for need, p in ((n, self.progress[n]) for n in needs)
            }

    def checkpoint_runs(self) -> CheckpointRuns:
        """The run's per-checkpoint MLflow children (flows.checkpoint_results)."""
        with self.parent_lock:
            if self._checkpoint_runs is None:
                tags = {"hpcfleet.run_id": self.run_id, "hpcfleet.partner": self.run.partner}
                if self.flow_run_id:
                    tags["prefect.flow_run_id"] = self.flow_run_id
                self._checkpoint_runs = CheckpointRuns(
                    self.store, self.tracker, self.experiment_id, self.parent_mlflow_id, tags
                )
            return self._checkpoint_runs

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def spec(self) -> RunSpec:
        return self.run.spec

    def driver(self, site_name: str) -> SiteDriver:
        return self.drivers.get(self.sites[site_name])

    def layout(self, site_name: str, stage: str) -> StageLayout:
        return StageLayout(self.driver(site_name).workdir, self.run_id, stage)

    def cancel_requested(self) -> bool:
        """The run's cancel flag, read from the store at most once a second: every stage's
        wait loop asks after each change of its jobs, and a read loads the whole run."""
        read_at, requested = self._cancel_read
        if not requested and time.monotonic() - read_at >= CANCEL_READ_SECONDS:
            requested = self.store.get_run(self.run_id).cancel_requested
            self._cancel_read = (time.monotonic(), requested)
        return requested

    def base_tags(self, stage: str, site: str, attempt: int) -> dict[str, str]:
        tags = {
            "hpcfleet.run_id": self.run_id,
            "hpcfleet.stage": stage,
            "hpcfleet.site": site,
            "hpcfleet.partner": self.run.partner,
            "hpcfleet.attempt": str(attempt),
        }
        if self.flow_run_id:
            tags["prefect.flow_run_id"] = self.flow_run_id
        return tags
