"""One watcher per site per process: it polls every tracked job of every run on that
site with ONE scheduler call per cycle, no more often than the site allows, and wakes
whoever waits for those jobs. The same call lists the checkpoints of the running stages
that declare them (`watch_checkpoints`), each ready file hashed once (cached by path,
size and mtime), and hands every new one to its stage's callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from sites.checkpoints import CheckpointListing, CheckpointWatch, FoundCheckpoint
from sites.driver import SiteDriver
from sites.errors import SiteError
from sites.poll import poll_site
from sites.scheduler import JobStatus

log = logging.getLogger(__name__)


CheckpointCallback = Callable[[FoundCheckpoint], None]


@dataclass(frozen=True)
class _CheckpointSubscription:
    watch: CheckpointWatch
    on_found: CheckpointCallback  # called once per checkpoint name, sha256 set


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
        self._subscriptions: dict[str, _CheckpointSubscription] = {}
        self._digests: dict[tuple[str, str, int, int], str] = {}  # (outputs, path, size, mtime)
        self._delivered: set[tuple[str, str]] = set()  # (subscription key, checkpoint name)
        self._refused: set[str] = set()  # logged once each
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

    def watch_checkpoints(
        self, key: str, watch: CheckpointWatch, on_found: CheckpointCallback
    ) -> None:
        """List `watch`'s checkpoints in every poll (while jobs are tracked) and call
        `on_found` once for each new one; `key` names the subscription (run and stage)."""
        with self._changed:
            self._subscriptions[key] = _CheckpointSubscription(watch, on_found)

    def unwatch_checkpoints(self, key: str) -> None:
        with self._changed:
            self._subscriptions.pop(key, None)

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
                subscriptions = list(self._subscriptions.items())
            if not ids or now < next_poll:
                # Tracking new jobs wakes us, but never sooner than the site allows.
                self._wake.wait(next_poll - now if ids else self.interval)
                self._wake.clear()
                continue
            watches = [sub.watch for _, sub in subscriptions]
            try:
                statuses, listing = poll_site(self.driver, ids, watches, self._known(watches))
            except SiteError as exc:
                self.last_error = exc
                delay = min(delay * 2, self.max_backoff)
                log.warning(
                    "polling %s failed (%s); next try in %.0f s", self.driver.name, exc, delay
                )
            else:
                delay = self.interval
                self.last_error = None
                if listing is not None:
                    # Before the statuses: whoever sees a job end has seen its checkpoints.
                    self._deliver(subscriptions, listing)
                with self._changed:
                    self.polls += 1
                    self._latest.update(statuses)
                    self._changed.notify_all()
            next_poll = time.monotonic() + delay

    def _known(self, watches: list[CheckpointWatch]) -> list[str]:
        """Keys (`FoundCheckpoint.key`) of the ready files hashed already."""
        return [
            f"{index}/{path}/{size} {mtime}"
            for index, watch in enumerate(watches)
            for (outputs, path, size, mtime) in self._digests
            if outputs == watch.outputs
        ]

    def _deliver(
        self, subscriptions: list[tuple[str, _CheckpointSubscription]], listing: CheckpointListing
    ) -> None:
        for refused in listing.refused:
            if refused not in self._refused:
                self._refused.add(refused)
                log.warning("%s: a checkpoint entry was refused: %s", self.driver.name, refused)
        for found in listing.found:
            key, subscription = subscriptions[found.watch]
            cache_key = (subscription.watch.outputs, found.path, found.size, found.mtime)
            digest = found.sha256 or self._digests.get(cache_key)
            if digest is None:
                continue  # forgotten between the command and now: hashed next poll
            self._digests[cache_key] = digest
            if (key, found.name) in self._delivered:
                continue
            try:
                subscription.on_found(replace(found, sha256=digest))
            except Exception:  # a bug or a store error: tried again next poll
                log.exception("recording checkpoint %s of %s failed", found.name, key)
            else:
                self._delivered.add((key, found.name))


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
