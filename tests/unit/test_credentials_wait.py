"""While a site's credentials are expired, its stages say so and its jobs are not lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from flows.context import RunContext
from flows.credentials import FollowingWait
from flows.watcher import SiteWatcher
from registry.records import JobRecord
from registry.states import JobState
from sites.errors import CredentialsExpired, SiteError, SiteUnreachable

EXPIRED = CredentialsExpired("leonardo", datetime(2026, 12, 1, 21, 0, tzinfo=UTC))


@dataclass
class RecordingStore:
    stage_updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def update_stage(self, run_id: str, name: str, **fields: Any) -> None:
        self.stage_updates.append((name, fields))


@dataclass
class Context:
    store: RecordingStore = field(default_factory=RecordingStore)
    run_id: str = "r1"


@dataclass
class Watcher:
    last_error: SiteError | None = None


def job(job_id: int, site: str, stage: str = "train") -> JobRecord:
    return JobRecord(
        id=job_id,
        run_id="r1",
        stage=stage,
        attempt=1,
        site=site,
        job_name=f"hpcfleet-r1-{stage}-1",
        scheduler_id=str(job_id),
        array_index=None,
        array_value=None,
        state=JobState.PENDING,
    )


def test_the_stage_shows_the_expiry_once_and_clears_it_after_renewal() -> None:
    ctx = Context()
    leonardo = Watcher(EXPIRED)
    watchers = cast(dict[str, SiteWatcher], {"leonardo": leonardo})
    live, lost_after = [job(1, "leonardo")], {1: 0.0}
    waiting = FollowingWait(cast(RunContext, ctx))

    waiting.update(watchers, live, lost_after, 600.0)
    waiting.update(watchers, live, lost_after, 600.0)
    leonardo.last_error = None
    waiting.update(watchers, live, lost_after, 600.0)

    assert ctx.store.stage_updates == [
        ("train", {"reason": str(EXPIRED)}),
        ("train", {"reason": None}),
    ]


def test_jobs_of_a_site_that_cannot_log_in_are_not_declared_lost() -> None:
    ctx = Context()
    watchers = cast(
        dict[str, SiteWatcher],
        {"leonardo": Watcher(EXPIRED), "lumi": Watcher(SiteUnreachable("lumi", "timed out"))},
    )
    lost_after = {1: 0.0, 2: 0.0}

    FollowingWait(cast(RunContext, ctx)).update(
        watchers, [job(1, "leonardo"), job(2, "lumi")], lost_after, 600.0
    )

    assert lost_after[1] > 0.0  # pushed back while the credentials are renewed
    assert lost_after[2] == 0.0  # an ordinary outage keeps its deadline
    assert [name for name, _ in ctx.store.stage_updates] == ["train"]
