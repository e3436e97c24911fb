"""Waiting out expired credentials: a site whose short-lived SSH certificate expired
mid-run (Leonardo: 12 h, CSCS: 24 h) is not down, and nothing about the run is wrong.

Its stages wait, with the state text "credentials for site X expired at T: renew them,
e.g. `step ssh login`", for as long as it takes (no 5-minute limit: only a person can
renew them), and continue by themselves once a login works again. Nothing fails and
nothing is resubmitted meanwhile; cancelling the run ends the wait.

- `with_retries` (flows.retry) waits here for operations that meet `CredentialsExpired`;
- `follow` (flows.following) keeps jobs that cannot be polled meanwhile from being
  declared lost, and shows the state text while the site's watcher cannot log in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sites.errors import CredentialsExpired

if TYPE_CHECKING:
    from flows.context import RunContext
    from flows.watcher import SiteWatcher
    from registry.records import JobRecord

log = logging.getLogger(__name__)

# How often a login is tried again while waiting for renewed credentials.
RENEWAL_POLL_SECONDS = 30.0


def _ignore(text: str | None) -> None:
    return None


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RenewalWait:
    """Where the wait is shown (`note(text)`, `note(None)` once it is over) and what
    ends it early (`cancelled()`: the error is raised then)."""

    note: Callable[[str | None], None] = _ignore
    cancelled: Callable[[], bool] = _never


def renewal_wait(ctx: RunContext, stage: str) -> RenewalWait:
    """The wait of one stage of a run: its state text, ended by cancelling the run."""

    def note(text: str | None) -> None:
        ctx.store.update_stage(ctx.run_id, stage, reason=text)

    return RenewalWait(note=note, cancelled=ctx.cancel_requested)


def await_renewal(
    exc: CredentialsExpired,
    wait: RenewalWait,
    *,
    first: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """One round of waiting: say so (the first time), then sleep; raise `exc` if the
    run was cancelled meanwhile."""
    if wait.cancelled():
        raise exc
    if first:
        log.warning("%s; waiting for the renewal", exc)
        wait.note(str(exc))
    sleep(RENEWAL_POLL_SECONDS)


@dataclass
class FollowingWait:
    """While `follow` waits for jobs: which sites' watchers cannot log in because the
    credentials expired, shown on the stages of their jobs until a poll works again."""

    ctx: RunContext
    noted: set[tuple[str, str]] = field(default_factory=set)  # (site, stage)

    def update(
        self,
        watchers: dict[str, SiteWatcher],
        live: Iterable[JobRecord],
        lost_after: dict[int, float],
        lost_seconds: float,
    ) -> None:
        """Show or clear the state text; push back the lost-job deadline of the jobs
        of a site that cannot be polled (their state is unknown, not lost)."""
        live = list(live)
        for site, watcher in watchers.items():
            error = watcher.last_error
            stages = {job.stage for job in live if job.site == site}
            for stage in stages:
                key = (site, stage)
                if isinstance(error, CredentialsExpired) and key not in self.noted:
                    self.noted.add(key)
                    log.warning("%s; stage %s waits for the renewal", error, stage)
                    self.ctx.store.update_stage(self.ctx.run_id, stage, reason=str(error))
                elif not isinstance(error, CredentialsExpired) and key in self.noted:
                    self.noted.discard(key)
                    self.ctx.store.update_stage(self.ctx.run_id, stage, reason=None)
            if isinstance(error, CredentialsExpired):
                for job in live:
                    if job.site == site:
                        lost_after[job.id] = time.monotonic() + lost_seconds
