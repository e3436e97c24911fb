"""Everything one run's stages share while the orchestrator drives them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from flows.layout import StageLayout
from flows.planning import StagePlan
from flows.tracking import Tracker
from flows.watcher import WatcherPool
from registry.records import RunRecord
from registry.runspec import RunSpec
from registry.site import Site
from registry.store import Store
from sites.driver import DriverPool, SiteDriver


@dataclass
class RunContext:
    store: Store
    run: RunRecord
    plans: dict[str, StagePlan]
    drivers: DriverPool
    watchers: WatcherPool
    tracker: Tracker
    experiment_id: str
    parent_mlflow_id: str
    files: dict[str, tuple[bytes, int]]
    sites: dict[str, Site]  # the sites this run uses, as registered when it started
    scratch: Path  # local directory for fetched logs and relayed data
    flow_run_id: str | None = None
    parent_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def spec(self) -> RunSpec:
        return self.run.spec

    def driver(self, site_name: str) -> SiteDriver:
        return self.drivers.get(self.sites[site_name])

    def layout(self, site_name: str, stage: str) -> StageLayout:
        return StageLayout(self.driver(site_name).workdir, self.run_id, stage)

    def cancel_requested(self) -> bool:
        return self.store.get_run(self.run_id).cancel_requested

    def base_tags(self, stage: str, site: str, attempt: int) -> dict[str, str]:
        tags = {
            "hpcfleet.run_id": self.run_id,
            "hpcfleet.stage": stage,
            "hpcfleet.site": site,
            "hpcfleet.partner": self.run.partner,
            "hpcfleet.attempt": str(attempt),
        }
        if self.flow_run_id:
            tags["prefect.flow_run_id"] = self.flow_run_id
        return tags
