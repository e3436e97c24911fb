"""What the Sites page shows of each site: references and health, never secret values.

Pure: a site document, its owner's name, its latest stored probe and its job records in,
a `SiteView` out. A site's environment values are never copied out (only the variable
names: they may hold tokens); an identity file appears as its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from dashboard.data.burn import billed, cumulative_usage, daily, site_forecast
from flows.burn import BurnForecast, period_bounds
from flows.launch import nodes_by_stage
from registry.records import ProbeRecord
from registry.site import Site

if TYPE_CHECKING:
    from registry.store import Store


@dataclass(frozen=True)
class ProbeView:
    checked_at: datetime
    reachable: bool
    ok: bool
    queue_depth: int | None
    checks: tuple[tuple[str, bool, str], ...]  # (check, ok, detail)


@dataclass(frozen=True)
class AllocationView:
    forecast: BurnForecast
    usage: pd.DataFrame  # (time, used): cumulative GPU-hours in the period, daily steps


@dataclass(frozen=True)
class SiteView:
    """What the Sites page shows of one site: references, never secret values."""

    name: str
    owner: str
    owner_name: str
    description: str
    scheduler: str
    login: str
    proxy_jump: tuple[str, ...]
    identity_file: str | None
    host_key: str  # "pinned", "pinned (known_hosts file)", "not pinned" or "n/a (local)"
    partitions: str
    modules: tuple[str, ...]
    env_names: tuple[str, ...]
    container_image: str | None
    storage: str | None
    shared_with: tuple[str, ...]
    labels: Mapping[str, str]
    probe: ProbeView | None
    allocation: AllocationView | None
    gpu_hours_total: float = 0.0
    jobs_total: int = 0

    @property
    def host_key_pinned(self) -> bool | None:
        if self.host_key == "n/a (local)":
            return None
        return self.host_key != "not pinned"


def site_view(
    site: Site,
    owner_name: str,
    probe: ProbeRecord | None,
    site_jobs: pd.DataFrame,
    now: datetime,
) -> SiteView:
    ssh = site.ssh
    if ssh is None:
        login, host_key = "this machine", "n/a (local)"
    else:
        login = f"{ssh.user + '@' if ssh.user else ''}{ssh.host}"
        login += f":{ssh.port}" if ssh.port else ""
        host_key = ("pinned" if ssh.host_key else
                    "pinned (known_hosts file)" if ssh.known_hosts else "not pinned")
    if site.slurm is not None:
        partitions = ", ".join(
            p.name + (f" ({p.gpus_per_node}× {p.gpu_type or 'GPU'})" if p.gpus_per_node else "")
            for p in site.slurm.partitions
        )
    else:
        local = site.local
        partitions = f"local: {local.slots if local else 2} slot(s)"
        if local and local.gpus:
            partitions += f", {local.gpus}× {local.gpu_type or 'GPU'}"
    s3 = site.storage.s3 if site.storage else None
    storage = None
    if s3 is not None:
        storage = f"s3://{s3.bucket}/{s3.prefix}" + (f" (profile {s3.profile})" if s3.profile
                                                     else "")
    allocation = None
    if site.allocation is not None:
        start, end = period_bounds(site.allocation.start, site.allocation.end)
        allocation = AllocationView(
            site_forecast(site.allocation.gpu_hours, site_jobs, start, end, now),
            daily(cumulative_usage(site_jobs, start, end)),
        )
    env = site.environment
    return SiteView(
        name=site.name, owner=site.partner, owner_name=owner_name,
        description=site.description, scheduler=site.scheduler, login=login,
        proxy_jump=tuple(ssh.proxy_jump) if ssh else (),
        identity_file=ssh.identity_file if ssh else None, host_key=host_key,
        partitions=partitions, modules=tuple(env.modules),
        env_names=tuple(sorted(env.env)),  # names only: values may be tokens
        container_image=env.container.image if env.container else None,
        storage=storage, shared_with=tuple(site.shared_with), labels=dict(site.labels),
        probe=_probe_view(probe) if probe else None, allocation=allocation,
        gpu_hours_total=float(site_jobs["gpu_hours"].sum()) if len(site_jobs) else 0.0,
        jobs_total=len(site_jobs),
    )


def _probe_view(probe: ProbeRecord) -> ProbeView:
    checks = []
    for item in probe.details.get("checks", []):
        if isinstance(item, Mapping):
            checks.append((str(item.get("name", "")), bool(item.get("ok")),
                           str(item.get("detail", ""))))
    return ProbeView(probe.checked_at, probe.reachable, probe.ok, probe.queue_depth,
                     tuple(checks))


def load_sites(store: Store, jobs: pd.DataFrame, now: datetime) -> list[SiteView]:
    partners = {p.id: p.name for p in store.list_partners()}
    probes = store.latest_probes()
    by_site = dict(iter(jobs.groupby("site"))) if len(jobs) else {}
    empty = jobs.iloc[0:0]
    sites = [record.site for record in store.list_sites()]
    # Per-node billing needs each stage's node count, from the specs: read only then.
    per_node = any(s.allocation and s.allocation.billing.per == "node" for s in sites)
    nodes = nodes_by_stage(store.list_runs()) if per_node else {}
    return [
        site_view(site, partners.get(site.partner, site.partner), probes.get(site.name),
                  billed(site, by_site.get(site.name, empty), nodes), now)
        for site in sites
    ]
