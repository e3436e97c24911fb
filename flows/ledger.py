"""The allocation ledger: GPU-hours used per partner and site (from the scheduler's
accounting, stored with each job), against what each site's allocation grants, with the
burn-rate forecast of `flows.burn` to the end of the period. Pure functions over store
records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from flows.burn import burn_forecast, charged_at, in_period, period_bounds
from flows.planning import StagePlan
from registry.records import JobRecord
from registry.runspec import RunSpec
from registry.site import Site


@dataclass(frozen=True)
class SiteUsage:
    site: str
    granted: float | None  # GPU-hours of the current period; None without an allocation
    used: float
    by_partner: Mapping[str, float] = field(default_factory=dict)
    period_start: date | None = None
    period_end: date | None = None
    burn_per_day: float = 0.0
    forecast: float | None = None  # used by the end of the period at the recent rate

    @property
    def remaining(self) -> float | None:
        return None if self.granted is None else self.granted - self.used

    @property
    def over_forecast(self) -> bool:
        return (
            self.granted is not None and self.forecast is not None and self.forecast > self.granted
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "site": self.site,
            "granted": self.granted,
            "used": round(self.used, 6),
            "remaining": self.remaining,
            "by_partner": dict(self.by_partner),
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "period_end": self.period_end.isoformat() if self.period_end else None,
            "burn_per_day": round(self.burn_per_day, 6),
            "forecast": None if self.forecast is None else round(self.forecast, 6),
        }


def site_usage(
    site: Site, jobs: Iterable[JobRecord], partners_by_run: Mapping[str, str], now: datetime
) -> SiteUsage:
    """Usage of `site` in its allocation period up to `now` (all time when it has none),
    with the burn forecast of `flows.burn` (the one the dashboard shows)."""
    allocation = site.allocation
    period = period_bounds(allocation.start, allocation.end) if allocation else None
    by_partner: dict[str, float] = defaultdict(float)
    points: list[tuple[datetime, float]] = []
    for job in jobs:
        if job.site != site.name or not job.gpu_hours:
            continue
        moment = charged_at(job.ended, job.started, job.submitted)
        if period and moment and not (in_period(moment, *period) and moment <= now):
            continue  # outside the period, or (a clock ahead of ours) not yet
        by_partner[partners_by_run.get(job.run_id, "?")] += job.gpu_hours
        if moment:
            points.append((moment, job.gpu_hours))
    used = sum(by_partner.values())
    if allocation is None or period is None:
        return SiteUsage(site.name, None, used, dict(by_partner))
    burn = burn_forecast(allocation.gpu_hours, points, *period, now)
    return SiteUsage(
        site.name,
        allocation.gpu_hours,
        used,
        dict(by_partner),
        allocation.start,
        allocation.end,
        burn.rate_per_day,
        burn.projected,
    )


def requested_gpu_hours(spec: RunSpec, plans: Mapping[str, StagePlan]) -> dict[str, float]:
    """The most GPU-hours a run can use per site: every task running to its time limit,
    retries and resumes included."""
    per_site: dict[str, float] = defaultdict(float)
    for stage in spec.stages:
        plan = plans[stage.name]
        gpus = stage.resources.nodes * stage.resources.gpus
        if not gpus:
            continue
        hours = stage.resources.time / 3600 * (1 + stage.retries)
        for site in plan.sites:
            tasks = len(plan.shares.get(site, ())) or 1
            per_site[site] += gpus * hours * tasks
    return dict(per_site)


def allocation_warnings(
    requested: Mapping[str, float], usage: Mapping[str, SiteUsage]
) -> list[str]:
    """One sentence per site where the run could exceed what is left of the allocation."""
    warnings = []
    for site, hours in sorted(requested.items()):
        current = usage.get(site)
        if current is None or current.remaining is None:
            continue
        if hours > current.remaining:
            warnings.append(
                f"site {site}: the run may use up to {hours:.1f} GPU-hours but only "
                f"{max(current.remaining, 0):.1f} of {current.granted:.1f} remain"
            )
    return warnings


def now_utc() -> datetime:
    return datetime.now(UTC)
