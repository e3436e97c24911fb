"""The allocation ledger: usage per partner and site, burn rate, forecast, launch warnings."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flows.ledger import allocation_warnings, requested_gpu_hours, site_usage
from flows.planning import plan_run
from registry.records import JobRecord
from registry.runspec import RunSpec
from registry.states import JobState
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
    usage = site_usage(SITE, jobs, {"r1": "cuni", "r2": "csc", "r3": "cuni"}, date(2026, 1, 5))
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
    usage = {"gpu": site_usage(SITE, [job("r1", 30, 1)], {"r1": "csc"}, date(2026, 1, 2))}
    [warning] = allocation_warnings(requested, usage)
    assert "up to 80.0 GPU-hours but only 70.0 of 100.0 remain" in warning
