"""The allocation ledger: usage per partner and site, burn rate, forecast, launch warnings;
and the one burn forecast that `hpcfleet site usage` and the dashboard share."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dashboard.data.queries import load_jobs
from dashboard.data.sites import load_sites
from flows.burn import burn_forecast, period_bounds
from flows.ledger import allocation_warnings, requested_gpu_hours, site_usage
from flows.planning import plan_run
from registry.partner import Partner
from registry.records import JobRecord
from registry.runspec import RunSpec
from registry.states import JobState
from registry.store import Store
from tests.helpers import local_site

SITE = local_site(
    "gpu",
    "csc",
    local={"slots": 2, "gpus": 4},
    allocation={"gpu_hours": 100, "start": "2026-01-01", "end": "2026-01-10"},
)


def job(run_id: str, hours: float, day: int, site: str = "gpu") -> JobRecord:
    moment = datetime(2026, 1, day, 12, tzinfo=UTC)
    return JobRecord(
        id=1,
        run_id=run_id,
        stage="s",
        attempt=1,
        site=site,
        job_name="n",
        scheduler_id="1",
        array_index=None,
        array_value=None,
        state=JobState.COMPLETED,
        started=moment,
        ended=moment,
        gpu_hours=hours,
    )


def test_usage_per_partner_with_forecast() -> None:
    jobs = [
        job("r1", 10, 1),
        job("r2", 5, 2),
        job("r1", 3, 3, site="other"),
        job("r3", 50, 1).model_copy(update={"ended": datetime(2025, 12, 1, tzinfo=UTC)}),
    ]
    now = datetime(2026, 1, 6, tzinfo=UTC)  # five days into a ten-day period
    usage = site_usage(SITE, jobs, {"r1": "cuni", "r2": "csc", "r3": "cuni"}, now)
    assert usage.by_partner == {"cuni": 10, "csc": 5}  # other sites and other periods excluded
    assert usage.used == 15 and usage.remaining == 85
    assert usage.burn_per_day == 3.0  # 15 GPU-hours over 5 days
    assert usage.forecast == 30.0 and not usage.over_forecast


def test_launch_warns_when_a_run_could_exceed_the_allocation() -> None:
    spec = RunSpec.model_validate(
        {
            "name": "r",
            "stages": [
                {
                    "name": "train",
                    "site": "gpu",
                    "command": ["x"],
                    "retries": 1,
                    "resources": {"gpus": 4, "time": "10:00:00"},
                }
            ],
        }
    )
    requested = requested_gpu_hours(spec, plan_run(spec, [SITE], "csc"))
    assert requested == {"gpu": 80.0}  # 4 GPUs x 10 h x (1 + 1 retry)
    usage = {"gpu": site_usage(SITE, [job("r1", 30, 1)], {"r1": "csc"}, datetime(2026, 1, 2, tzinfo=UTC))}
    [warning] = allocation_warnings(requested, usage)
    assert "up to 80.0 GPU-hours but only 70.0 of 100.0 remain" in warning


# -- the burn forecast ------------------------------------------------------------------


def test_forecast_extends_the_recent_rate_to_the_period_end() -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 12, 31))
    now = datetime(2026, 7, 1, tzinfo=UTC)
    # quiet for five months, then 10 GPU-h a day for the last 30 days
    points = [(now - timedelta(days=d), 10.0) for d in range(30)]
    result = burn_forecast(1000.0, points, start, end, now)
    assert result.used == 300.0
    assert result.rate_per_day == pytest.approx(10.0)
    assert result.projected == pytest.approx(300.0 + 10.0 * 184)
    assert result.status == "over"  # the period average (1.7 h/day) would say "under"
    assert result.runs_out is not None
    assert result.runs_out.date() == date(2026, 9, 9)  # 700 h left at 10 h/day: 70 days


@pytest.mark.parametrize(("granted", "status"), [(1000.0, "on pace"), (10_000.0, "under")])
def test_forecast_says_when_a_grant_fits_or_goes_unused(granted: float, status: str) -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 10))
    now = datetime(2026, 1, 6, tzinfo=UTC)  # five days in, five to go
    result = burn_forecast(granted, [(datetime(2026, 1, 2, tzinfo=UTC), 450.0)], start, end,
                           now)
    assert result.projected == pytest.approx(900.0)
    assert result.status == status


def test_a_first_hour_is_not_extrapolated_to_a_whole_day() -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 10))
    now = start + timedelta(hours=1)
    result = burn_forecast(100.0, [(start + timedelta(minutes=30), 10.0)], start, end, now)
    assert result.rate_per_day == pytest.approx(10.0)  # not 240 a day
    assert result.status == "over"  # 10 + 10 × 9.96 days


def test_forecast_outside_the_period_projects_nothing() -> None:
    start, end = period_bounds(date(2026, 1, 1), date(2026, 1, 10))
    assert burn_forecast(100.0, [], start, end, start - timedelta(days=1)).status == "not started"
    late = burn_forecast(100.0, [(start, 40.0)], start, end, end + timedelta(days=1))
    assert (late.status, late.used, late.projected) == ("ended", 40.0, 40.0)


@pytest.mark.parametrize("now", [
    datetime(2026, 7, 1, 9, 30, tzinfo=UTC),  # ramped up in the last weeks
    datetime(2026, 3, 15, tzinfo=UTC),  # busy early, quiet since
    datetime(2026, 1, 1, 6, tzinfo=UTC),  # six hours into the period
])
@pytest.mark.parametrize(
    "billing", [None, {"per": "gpu", "factor": 0.5}, {"per": "node", "factor": 2.0}]
)
def test_site_usage_and_the_dashboard_agree_on_the_same_jobs(
    tmp_path: Path, now: datetime, billing: dict[str, object] | None
) -> None:
    """`hpcfleet site usage` (flows.ledger) and the Sites page (dashboard.data.sites) read
    the same store and show the same used, burn rate and forecast, in the site's own
    billing unit."""
    allocation: dict[str, object] = {"gpu_hours": 2000, "start": "2026-01-01",
                                     "end": "2026-12-31"}
    if billing:
        allocation["billing"] = billing
    site = local_site("gpu", "csc", local={"slots": 2, "gpus": 4}, allocation=allocation)
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    store.put_partner(Partner(id="csc", name="CSC"))
    store.put_site(site, "csc")
    store.create_run("r1", RunSpec.model_validate(
        {"name": "r", "stages": [{"name": "s", "site": "gpu", "command": ["x"],
                                  "resources": {"nodes": 3}}]}), "csc")
    moments = [datetime(2025, 12, 20, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC),
               datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 20, tzinfo=UTC)]
    moments += [datetime(2026, 6, 10, tzinfo=UTC) + timedelta(days=d) for d in range(20)]
    store.add_jobs([{"run_id": "r1", "stage": "s", "attempt": 1, "site": "gpu",
                     "job_name": f"j{i}", "state": JobState.COMPLETED, "submitted": when,
                     "started": when, "ended": when + timedelta(hours=2), "gpu_hours": 12.5}
                    for i, when in enumerate(moments)])
    ledger = site_usage(site, store.all_jobs(), {"r1": "csc"}, now, {("r1", "s"): 3})
    [view] = load_sites(store, load_jobs(store), now)
    store.close()
    assert view.allocation is not None
    shown = view.allocation.forecast
    assert ledger.used == pytest.approx(shown.used)
    assert ledger.burn_per_day == pytest.approx(shown.rate_per_day)
    assert ledger.forecast == pytest.approx(shown.projected)
    assert ledger.over_forecast == (shown.status == "over")
    assert ledger.forecast is not None and ledger.forecast >= ledger.used > 0
    per_job = {None: 12.5, "gpu": 12.5 * 0.5, "node": 3 * 2 * 2.0}[billing and billing["per"]]
    assert view.gpu_hours_total == pytest.approx(per_job * len(moments))


def test_a_chained_stage_requests_the_hours_of_all_its_queued_segments() -> None:
    train = {
        "name": "train",
        "site": "gpu",
        "command": ["x"],
        "resumable": True,
        "chain": 3,
        "resources": {"gpus": 4, "time": "10:00:00"},
    }
    spec = RunSpec.model_validate({"name": "r", "stages": [train]})
    requested = requested_gpu_hours(spec, plan_run(spec, [SITE], "csc"))
    assert requested == {"gpu": 160.0}  # 4 GPUs x 10 h x (1 + 3 segments queued behind)
