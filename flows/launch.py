"""Launching a run: validate the spec against the registry, collect the files that
travel with it, and store it — all or nothing."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flows.ledger import (
    SiteUsage,
    allocation_warnings,
    requested_gpu_hours,
    site_usage,
    today_utc,
)
from flows.planning import StagePlan, fit, plan_run, spread
from flows.source_facts import launch_facts
from registry import manifests
from registry.errors import AccessDenied, DocumentError
from registry.loading import load_document
from registry.records import RunRecord, StageRecord
from registry.runspec import RunSpec, Stage
from registry.site import Site
from registry.store import Store

MAX_FILES_BYTES = 10 * 1024 * 1024
_WORD = re.compile(r"[A-Za-z0-9_./-]+")


def new_run_id() -> str:
    return secrets.token_hex(4)


def spec_files(spec: RunSpec, spec_dir: Path, source: str) -> dict[str, tuple[bytes, int]]:
    """Files next to the spec that a command or script names (INTERFACE.md)."""
    names: set[str] = set()
    for index, name in enumerate(spec.files):
        if not (spec_dir / name).is_file():
            raise DocumentError(
                f"no file {name!r} next to the spec", source=source, field=f"files[{index}]"
            )
        names.add(name.removeprefix("./"))
    for stage in spec.stages:
        words = list(stage.command or []) + _WORD.findall(stage.script or "")
        for word in words:
            if "{" in word or word.startswith("/") or ".." in word.split("/"):
                continue
            if (spec_dir / word).is_file():
                names.add(word.removeprefix("./"))
    files: dict[str, tuple[bytes, int]] = {}
    total = 0
    for name in sorted(names):
        path = spec_dir / name
        content = path.read_bytes()
        total += len(content)
        if total > MAX_FILES_BYTES:
            raise DocumentError(
                f"the files next to the spec that its commands name exceed "
                f"{MAX_FILES_BYTES // (1024 * 1024)} MiB; stage large inputs as data instead",
                source=source,
            )
        files[name] = (content, path.stat().st_mode & 0o777)
    return files


class AllocationExceeded(AccessDenied):
    """A strict launch would exceed what is left of a site's allocation."""


@dataclass(frozen=True)
class Launched:
    run: RunRecord
    warnings: list[str]


def launch(
    store: Store,
    spec_path: Path,
    partner: str,
    *,
    strict: bool = False,
    run_id: str | None = None,
) -> Launched:
    """Validate and store a run from its spec file; nothing is stored on error.

    A run that could exceed the remaining allocation of a site it uses is launched with
    a warning, or refused when `strict`.
    """
    spec = load_document(spec_path, RunSpec)
    sites = [record.site for record in store.list_sites()]
    store.get_partner(partner)
    usage = usage_by_site(store)
    remaining = {name: u.remaining for name, u in usage.items() if u.remaining is not None}
    plans = plan_run(
        spec, sites, partner, store.latest_probes(), remaining=remaining, source=str(spec_path)
    )
    files = spec_files(spec, spec_path.parent, str(spec_path))
    warnings = allocation_warnings(requested_gpu_hours(spec, plans), usage)
    if warnings and strict:
        raise AllocationExceeded(
            f"{spec_path}: {warnings[0]} (launched without --strict, it would run with a warning)"
        )
    run = store.create_run(run_id or new_run_id(), spec, partner, files)
    manifests.put_launch_facts(store, run.run_id, launch_facts(spec_path))
    return Launched(run, warnings)


def usage_by_site(store: Store, names: list[str] | None = None) -> dict[str, SiteUsage]:
    """The allocation ledger of every site (or the named ones), from stored job records."""
    partners = {run.run_id: run.partner for run in store.list_runs()}
    jobs = store.all_jobs()
    today = today_utc()
    return {
        record.site.name: site_usage(record.site, jobs, partners, today)
        for record in store.list_sites()
        if names is None or record.site.name in names
    }


def plans_for(
    store: Store, run: RunRecord, stages: list[StageRecord]
) -> tuple[dict[str, StagePlan], dict[str, Site]]:
    """The plan of every stage: kept as recorded for stages that started, fresh otherwise."""
    sites = {record.site.name: record.site for record in store.list_sites()}
    plans = plan_run(run.spec, list(sites.values()), run.partner, store.latest_probes())
    for record in stages:
        if record.sites:
            plans[record.name] = _recorded_plan(run.spec.stage(record.name), record, sites)
    used = {name for plan in plans.values() for name in plan.sites}
    return plans, {name: sites[name] for name in used}


def _recorded_plan(stage: Stage, record: StageRecord, sites: dict[str, Site]) -> StagePlan:
    missing = [name for name in record.sites if name not in sites]
    if missing:
        raise DocumentError(
            f"stage {stage.name!r} ran on site {missing[0]!r}, which is no longer registered"
        )
    partitions = {name: fit(stage, sites[name])[0] for name in record.sites}
    shares = spread(stage.array_values, record.sites) if stage.array else {}
    return StagePlan(stage.name, tuple(record.sites), partitions, record.choice or "", shares)
