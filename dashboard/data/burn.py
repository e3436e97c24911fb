"""The burn of a site's allocation as the Sites page charts it: cumulative use, in the
site's billing unit (`billed`), over the period, from the jobs frame. The forecast itself
is `flows.burn.burn_forecast`, the same one `hpcfleet site usage` prints; this module
only feeds it the frame's jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from flows.burn import BurnForecast, burn_forecast
from registry.site import Site


def billed(site: Site, jobs: pd.DataFrame, nodes: Mapping[tuple[str, str], int]) -> pd.DataFrame:
    """`jobs` with `gpu_hours` in `site`'s billing unit, counted as
    `flows.ledger.billed_units` counts them (vectorised): GPU-hours × factor, or nodes ×
    hours × factor on a site that bills whole nodes; a job without GPUs costs nothing.
    `nodes`: (run id, stage) -> nodes, needed only for sites that bill per node."""
    billing = site.allocation.billing if site.allocation else None
    if billing is None or not len(jobs) or (billing.per == "gpu" and billing.factor == 1.0):
        return jobs
    if billing.per == "node":
        counts = [nodes.get(key, 1) for key in zip(jobs["run_id"], jobs["stage"], strict=True)]
        units = jobs["duration_s"].fillna(0.0) / 3600.0 * pd.Series(counts, index=jobs.index)
    else:
        units = jobs["gpu_hours"]
    out = jobs.copy()
    out["gpu_hours"] = units.where(jobs["gpu_hours"] > 0, 0.0) * billing.factor
    return out


def job_times(jobs: pd.DataFrame) -> pd.Series:
    """When each job's hours count (as `flows.burn.charged_at`): ended, else started, else
    submitted."""
    return jobs["ended"].fillna(jobs["started"]).fillna(jobs["submitted"])


def usage_points(jobs: pd.DataFrame) -> list[tuple[datetime, float]]:
    """(when the hours count, GPU-hours) of each job that has a time."""
    if not len(jobs):
        return []
    frame = pd.DataFrame({"time": job_times(jobs), "gpu_hours": jobs["gpu_hours"]}).dropna()
    # pandas Timestamps are datetimes: no per-row conversion for 45,000 jobs
    return list(zip(frame["time"].tolist(), frame["gpu_hours"].astype(float).tolist(), strict=True))


def site_forecast(
    granted: float, jobs: pd.DataFrame, start: datetime, end: datetime, now: datetime
) -> BurnForecast:
    return burn_forecast(granted, usage_points(jobs), start, end, now)


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
