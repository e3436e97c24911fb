"""How fast a site's allocation burns: usage over the period and a linear forecast.

Pure functions over job records' GPU-hours. A job's hours count on the day it ended
(or started, or was submitted, for jobs still in flight), inside the allocation period.
The forecast extends the recent burn rate (the last 30 days, or the period so far if it
is younger) linearly to the period's end: a site that started burning last month is
judged by last month, not diluted by the quiet months before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import pandas as pd

BurnStatus = Literal["not started", "ended", "on pace", "over", "under"]
UNDER_USE_SHARE = 0.8  # a projection below this share of the grant is "under" (unused hours)
RATE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class BurnForecast:
    granted: float
    used: float  # GPU-hours used inside the period so far
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
    return (
        datetime.combine(start, time(), UTC),
        datetime.combine(end + timedelta(days=1), time(), UTC),
    )


def job_times(jobs: pd.DataFrame) -> pd.Series:
    """When each job's hours count: ended, else started, else submitted."""
    return jobs["ended"].fillna(jobs["started"]).fillna(jobs["submitted"])


def cumulative_usage(jobs: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """(time, used) steps of cumulative GPU-hours in [start, end); begins at (start, 0)."""
    when = job_times(jobs) if len(jobs) else pd.Series([], dtype="datetime64[ns, UTC]")
    frame = pd.DataFrame({"time": when, "gpu_hours": jobs["gpu_hours"] if len(jobs) else []})
    frame = frame.dropna(subset=["time"])
    frame = frame[(frame["time"] >= start) & (frame["time"] < end) & (frame["gpu_hours"] > 0)]
    frame = frame.sort_values("time")
    used = frame["gpu_hours"].cumsum()
    origin = pd.DataFrame({"time": [pd.Timestamp(start)], "used": [0.0]})
    steps = pd.DataFrame({"time": frame["time"].to_numpy(), "used": used.to_numpy()})
    return pd.concat([origin, steps], ignore_index=True) if len(steps) else origin


def daily(usage: pd.DataFrame) -> pd.DataFrame:
    """The last step of each day of a `cumulative_usage` frame: enough for a chart of a
    year, and a few hundred points instead of one per job."""
    return usage.groupby(usage["time"].dt.floor("D"), sort=False).tail(1).reset_index(drop=True)


def used_by(usage: pd.DataFrame, when: datetime) -> float:
    """Cumulative GPU-hours at `when` from a `cumulative_usage` frame."""
    before = usage[usage["time"] <= pd.Timestamp(when)]
    return float(before["used"].iloc[-1]) if len(before) else 0.0


def forecast(
    granted: float,
    usage: pd.DataFrame,
    start: datetime,
    end: datetime,
    now: datetime,
    window: timedelta = RATE_WINDOW,
) -> BurnForecast:
    """Project the usage to the period's end at the rate of the last `window`."""
    used = used_by(usage, now)
    if now < start:
        return BurnForecast(granted, used, start, end, now, 0.0, used, "not started")
    if now >= end:
        return BurnForecast(granted, used, start, end, now, 0.0, used, "ended")
    since = max(start, now - window)
    days = max((now - since).total_seconds() / 86400, 1 / 24)
    rate = (used - used_by(usage, since)) / days
    projected = used + rate * (end - now).total_seconds() / 86400
    status: BurnStatus = "on pace"
    if granted and projected > granted:
        status = "over"
    elif granted and projected < UNDER_USE_SHARE * granted:
        status = "under"
    return BurnForecast(granted, used, start, end, now, rate, projected, status, days)
