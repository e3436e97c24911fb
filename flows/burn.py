"""How fast a site's allocation burns: GPU-hours used in its period and a forecast to the
period's end. The one formula behind `hpcfleet site usage` (through `flows.ledger`) and
the dashboard's Sites page, so that both show the same numbers for the same jobs.

Pure functions over (when, GPU-hours) points. A job's hours count at the moment it ended
(or started, or was submitted, for jobs still in flight), inside the allocation period:
from 00:00 UTC of its first day to 24:00 UTC of its last.

The forecast extends the *recent* burn rate (over the last `RATE_WINDOW`, or the period
so far if it is younger, but never less than `MIN_RATE_SPAN`) linearly from now to the
period's end. Why not the average over the whole period so far (what the CLI used to
show): a forecast is there to warn in time, and the coming weeks look like the last
ones, not like the period's average. A site that idled for five months and now burns
10 GPU-hours a day runs out in weeks, while its period average still says "under"; a
site that burnt early and stopped would stay "over" for months. Thirty days smooth a
single busy day without hiding a change of pace; the one-day floor keeps a job that
ended an hour into the period from being extrapolated twenty-four-fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

BurnStatus = Literal["not started", "ended", "on pace", "over", "under"]
UNDER_USE_SHARE = 0.8  # a projection below this share of the grant is "under" (unused hours)
RATE_WINDOW = timedelta(days=30)
MIN_RATE_SPAN = timedelta(days=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class BurnForecast:
    granted: float
    used: float  # GPU-hours used inside the period up to `as_of`
    start: datetime  # period start (00:00 UTC)
    end: datetime  # period end (24:00 UTC of the last day)
    as_of: datetime
    rate_per_day: float  # over the rate window
    projected: float  # GPU-hours used by the end at the current rate
    status: BurnStatus
    window_days: float = 0.0  # how many days the rate was measured over

    @property
    def used_share(self) -> float:
        return self.used / self.granted if self.granted else 0.0

    @property
    def projected_share(self) -> float:
        return self.projected / self.granted if self.granted else 0.0

    @property
    def runs_out(self) -> datetime | None:
        """When the grant is used up at the current rate, if before the period ends."""
        if self.rate_per_day <= 0 or self.used >= self.granted:
            return None if self.used < self.granted else self.as_of
        when = self.as_of + timedelta(days=(self.granted - self.used) / self.rate_per_day)
        return when if when < self.end else None


def period_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """An allocation's period as UTC instants: start of the first day, end of the last."""
    return datetime.combine(start, time(), UTC), datetime.combine(end + DAY, time(), UTC)


def charged_at(
    ended: datetime | None, started: datetime | None, submitted: datetime | None
) -> datetime | None:
    """When a job's GPU-hours count: when it ended, else started, else was submitted."""
    return ended or started or submitted


def in_period(when: datetime, start: datetime, end: datetime) -> bool:
    return start <= when < end


def burn_forecast(
    granted: float,
    usage: Iterable[tuple[datetime, float]],
    start: datetime,
    end: datetime,
    now: datetime,
    window: timedelta = RATE_WINDOW,
) -> BurnForecast:
    """Usage of the period [start, end) up to `now`, projected to `end` at the recent rate.

    `usage` holds (when the hours count, GPU-hours) of the site's jobs, in any order;
    points outside the period, after `now` or without hours are ignored.
    """
    counted = [
        (when, hours)
        for when, hours in usage
        if hours > 0 and in_period(when, start, end) and when <= now
    ]
    used = sum(hours for _, hours in counted)
    if now < start:
        return BurnForecast(granted, used, start, end, now, 0.0, used, "not started")
    if now >= end:
        return BurnForecast(granted, used, start, end, now, 0.0, used, "ended")
    since = max(start, now - window)
    days = max(now - since, MIN_RATE_SPAN) / DAY
    rate = sum(hours for when, hours in counted if when > since) / days
    projected = used + rate * ((end - now) / DAY)
    return BurnForecast(
        granted, used, start, end, now, rate, projected, burn_status(granted, projected), days
    )


def burn_status(granted: float, projected: float) -> BurnStatus:
    if granted and projected > granted:
        return "over"
    if granted and projected < UNDER_USE_SHARE * granted:
        return "under"
    return "on pace"
