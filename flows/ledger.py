"""The allocation ledger: GPU-hours used per partner and site (from the scheduler's
accounting, stored with each job), against what each site's allocation grants, with the
burn-rate forecast of `flows.burn` to the end of the period. Pure functions over store
records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from flows.burn import burn_forecast, charged_at, in_period, period_bounds
from flows.planning import StagePlan
from registry.records import JobRecord
from registry.runspec import RunSpec
from registry.site import Billing, Site
from sites.scheduler import JobStatus


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


def billed_units(site: Site, job: JobRecord, nodes: int = 1) -> float:
    """What a GPU job costs in `site`'s billing unit (`allocation.billing`): its
    GPU-hours, or its `nodes` × hours on a site that bills whole nodes, times the factor.
    A job that used no GPU costs nothing here (CPU time is another allocation)."""
    billing = site.allocation.billing if site.allocation else Billing()
    if not job.gpu_hours:
        return 0.0
    if billing.per == "node":
        return nodes * (job.duration_seconds or 0.0) / 3600.0 * billing.factor
    return job.gpu_hours * billing.factor


def site_usage(
    site: Site,
    jobs: Iterable[JobRecord],
    partners_by_run: Mapping[str, str],
    now: datetime,
    nodes_by_stage: Mapping[tuple[str, str], int] | None = None,
) -> SiteUsage:
    """Usage of `site` in its allocation period up to `now` (all time when it has none),
    in the site's billing unit, with the burn forecast of `flows.burn` (the one the
    dashboard shows); `nodes_by_stage` ((run id, stage) -> nodes) serves sites that bill
    per node."""
    allocation = site.allocation
    period = period_bounds(allocation.start, allocation.end) if allocation else None
    by_partner: dict[str, float] = defaultdict(float)
    points: list[tuple[datetime, float]] = []
    for job in jobs:
        if job.site != site.name:
            continue
        nodes = (nodes_by_stage or {}).get((job.run_id, job.stage), 1)
        units = billed_units(site, job, nodes)
        if not units:
            continue
        moment = charged_at(job.ended, job.started, job.submitted)
        if period and moment and not (in_period(moment, *period) and moment <= now):
            continue  # outside the period, or (a clock ahead of ours) not yet
        by_partner[partners_by_run.get(job.run_id, "?")] += units
        if moment:
            points.append((moment, units))
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


def with_estimated_gpu_hours(
    status: JobStatus, gpus_per_node: int, nodes: int, partition: str | None
) -> JobStatus:
    """`status` with GPU-hours estimated as `gpus_per_node` × `nodes` × elapsed when the
    site's accounting reported none (no `gres/gpu` TRES) on a GPU partition; the
    reason says it is an estimate."""
    if status.gpu_hours or not gpus_per_node or not status.elapsed_seconds:
        return status
    hours = gpus_per_node * nodes * status.elapsed_seconds / 3600.0
    note = (
        f"GPU-hours estimated ({gpus_per_node} GPU(s)/node of partition {partition} x "
        f"{nodes} node(s)): the site's accounting has no gres/gpu"
    )
    reason = f"{status.reason}; {note}" if status.reason else note
    return replace(status, gpu_hours=hours, reason=reason)


def requested_gpu_hours(
    spec: RunSpec, plans: Mapping[str, StagePlan], sites: Mapping[str, Site] | None = None
) -> dict[str, float]:
    """The most a run can use per site: every task running to its time limit, retries
    and resumes included; in each site's billing unit when `sites` are given."""
    per_site: dict[str, float] = defaultdict(float)
    for stage in spec.stages:
        plan = plans[stage.name]
        gpus = stage.resources.nodes * stage.resources.gpus
        if not gpus:
            continue
        # A chain's queued segments (`chain: N`) each run to the time limit but the last.
        hours = stage.resources.time / 3600 * (1 + stage.retries + (stage.chain or 0))
        for site in plan.sites:
            tasks = len(plan.shares.get(site, ())) or 1
            allocation = (sites or {})[site].allocation if site in (sites or {}) else None
            billing = allocation.billing if allocation else Billing()
            units = stage.resources.nodes if billing.per == "node" else gpus
            per_site[site] += units * hours * tasks * billing.factor
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
