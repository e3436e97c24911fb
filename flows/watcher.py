"""One watcher per site per process: it polls every tracked job of every run on that
site with ONE scheduler call per cycle, no more often than the site allows, and wakes
whoever waits for those jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sites.driver import SiteDriver
from sites.errors import SiteError
from sites.scheduler import JobStatus

log = logging.getLogger(__name__)


class SiteWatcher:
    """Polls the jobs of one site in a background thread."""

    def __init__(self, driver: SiteDriver, interval: float, *, max_backoff: float = 60.0) -> None:
        self.driver = driver
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.polls = 0  # scheduler status calls made (for tests and benchmarks)
        self.last_error: SiteError | None = None
        self._tracked: dict[str, int] = {}  # job id -> number of waiters
        self._latest: dict[str, JobStatus] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch-{driver.name}", daemon=True)
        self._thread.start()

    def track(self, job_ids: Iterable[str]) -> None:
        with self._changed:
            for job_id in job_ids:
                self._tracked[job_id] = self._tracked.get(job_id, 0) + 1
        self._wake.set()  # poll soon: new jobs change quickly at first

    def untrack(self, job_ids: Iterable[str]) -> None:
        with self._changed:
            for job_id in job_ids:
                count = self._tracked.get(job_id, 0) - 1
                if count <= 0:
                    self._tracked.pop(job_id, None)
                else:
                    self._tracked[job_id] = count

    def snapshot(self) -> dict[str, JobStatus]:
        with self._changed:
            return dict(self._latest)

    def wait(
        self, done: Callable[[dict[str, JobStatus]], bool], timeout: float | None = None
    ) -> dict[str, JobStatus]:
        """Block until `done(latest statuses)` holds (checked after every poll)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not done(self._latest):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining if remaining is not None else 1.0)
            return dict(self._latest)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        delay = self.interval
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._changed:
                ids = sorted(self._tracked)
            if not ids or now < next_poll:
                # Tracking new jobs wakes us, but never sooner than the site allows.
                self._wake.wait(next_poll - now if ids else self.interval)
                self._wake.clear()
                continue
            try:
                statuses = self.driver.scheduler.status(ids)
            except SiteError as exc:
                self.last_error = exc
                delay = min(delay * 2, self.max_backoff)
                log.warning(
                    "polling %s failed (%s); next try in %.0f s", self.driver.name, exc, delay
                )
            else:
                delay = self.interval
                self.last_error = None
                with self._changed:
                    self.polls += 1
                    self._latest.update(statuses)
                    self._changed.notify_all()
            next_poll = time.monotonic() + delay


class WatcherPool:
    """The watchers of one process, one per site."""

    def __init__(self) -> None:
        self._watchers: dict[str, SiteWatcher] = {}
        self._lock = threading.Lock()

    def get(self, driver: SiteDriver) -> SiteWatcher:
        with self._lock:
            watcher = self._watchers.get(driver.name)
            if watcher is None or watcher.driver is not driver:
                if watcher is not None:
                    watcher.close()
                watcher = SiteWatcher(driver, driver.site.poll_interval)
                self._watchers[driver.name] = watcher
            return watcher

    def total_polls(self) -> int:
        with self._lock:
            return sum(w.polls for w in self._watchers.values())

    def close(self) -> None:
        with self._lock:
            for watcher in self._watchers.values():
                watcher.close()
            self._watchers.clear()
