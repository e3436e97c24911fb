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
    now_utc,
    requested_gpu_hours,
    site_usage,
)
from flows.matrix import resolve_cells_files
from flows.metrics import escaped_array_values
from flows.placement import place
from flows.planning import (
    StagePlan,
    fit,
    plan_launched_stage,
    plan_run,
    recorded_sites,
    spread,
)
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


@dataclass(frozen=True)
class CheckedLaunch:
    """A run spec checked against the registry and planned, not yet stored."""

    spec: RunSpec
    plans: dict[str, StagePlan]
    files: dict[str, tuple[bytes, int]]
    warnings: list[str]


def check_launch(
    store: Store, spec_path: Path, partner: str, *, strict: bool = False
) -> CheckedLaunch:
    """Everything `launch` checks, reading the store only (`flows.dry_run` stops here).

    A run that could exceed the remaining allocation of a site it uses gets a warning,
    or is refused when `strict`.
    """
    spec = resolve_cells_files(load_document(spec_path, RunSpec), spec_path.parent, str(spec_path))
    sites = [record.site for record in store.list_sites()]
    store.get_partner(partner)
    usage = usage_by_site(store)
    remaining = {name: u.remaining for name, u in usage.items() if u.remaining is not None}
    plans = plan_run(
        spec, sites, partner, store.latest_probes(), remaining=remaining, source=str(spec_path)
    )
    files = spec_files(spec, spec_path.parent, str(spec_path))
    by_name = {site.name: site for site in sites}
    warnings = allocation_warnings(requested_gpu_hours(spec, plans, by_name), usage)
    warnings += metric_key_warnings(spec)
    if warnings and strict:
        raise AllocationExceeded(
            f"{spec_path}: {warnings[0]} (launched without --strict, it would run with a warning)"
        )
    return CheckedLaunch(spec, plans, files, warnings)


def launch(
    store: Store,
    spec_path: Path,
    partner: str,
    *,
    strict: bool = False,
    run_id: str | None = None,
) -> Launched:
    """Validate and store a run from its spec file; nothing is stored on error."""
    checked = check_launch(store, spec_path, partner, strict=strict)
    run = store.create_run(run_id or new_run_id(), checked.spec, partner, checked.files)
    manifests.put_launch_facts(store, run.run_id, launch_facts(spec_path))
    return Launched(run, checked.warnings)


def metric_key_warnings(spec: RunSpec) -> list[str]:
    """Array values that MLflow would refuse in a metric key, and how they will appear."""
    warnings = []
    for stage in spec.stages:
        keys = stage.array_keys
        if len(keys) > 1:  # a matrix: each key's values are components of the parent's keys
            escaped = escaped_array_values(dict.fromkeys(c[k] for c in stage.cells for k in keys))
        else:
            escaped = escaped_array_values(stage.array_values)
        if escaped:
            shown = ", ".join(f"{v!r} as {k!r}" for v, k in list(escaped.items())[:3])
            more = f" and {len(escaped) - 3} more" if len(escaped) > 3 else ""
            warnings.append(
                f"stage {stage.name}: array values appear escaped in MLflow metric keys "
                f"({shown}{more}); each child run's tag hpcfleet.array_value keeps the value"
            )
    return warnings


def usage_by_site(store: Store, names: list[str] | None = None) -> dict[str, SiteUsage]:
    """The allocation ledger of every site (or the named ones), from stored job records."""
    runs = store.list_runs()
    partners = {run.run_id: run.partner for run in runs}
    sites = [r.site for r in store.list_sites() if names is None or r.site.name in names]
    jobs = store.all_jobs()
    now = now_utc()
    per_node = any(s.allocation and s.allocation.billing.per == "node" for s in sites)
    nodes = nodes_by_stage(runs) if per_node else None
    return {site.name: site_usage(site, jobs, partners, now, nodes) for site in sites}


def nodes_by_stage(runs: list[RunRecord]) -> dict[tuple[str, str], int]:
    """(run id, stage) -> nodes, for sites that bill whole nodes. Reading a spec validates
    it: only done when such a site exists, and a run whose stored spec no longer
    validates counts one node per job (its own listing names the broken row)."""
    nodes: dict[tuple[str, str], int] = {}
    for run in runs:
        try:
            stages = run.spec.stages
        except DocumentError:
            continue
        nodes.update({(run.run_id, stage.name): stage.resources.nodes for stage in stages})
    return nodes


def plans_for(
    store: Store, run: RunRecord, stages: list[StageRecord]
) -> tuple[dict[str, StagePlan], dict[str, Site]]:
    """The plan of every stage, and the sites the run uses.

    A stage that started keeps the sites recorded for it; one on a site removed from the
    registry since is driven through the site document the run recorded. Any other
    stage is planned afresh on the registered sites it may still use, or gets a refusal
    (`plan_launched_stage`).
    """
    registered = {record.site.name: record.site for record in store.list_sites()}
    known = {**recorded_sites(run.site_documents), **registered}
    probes = store.latest_probes()
    records = {record.name: record for record in stages}
    plans: dict[str, StagePlan] = {}
    for index, stage in enumerate(run.spec.stages):
        record = records.get(stage.name)
        if record is not None and record.sites:
            plans[stage.name] = _recorded_plan(stage, record, known)
        else:
            plans[stage.name] = plan_launched_stage(
                stage, registered, run.partner, probes, field=f"stages[{index}].site"
            )
    used = {name for plan in plans.values() for name in plan.sites}
    return plans, {name: known[name] for name in used}


def _recorded_plan(stage: Stage, record: StageRecord, sites: dict[str, Site]) -> StagePlan:
    missing = [name for name in record.sites if name not in sites]
    if missing:
        raise DocumentError(
            f"stage {stage.name!r} ran on site {missing[0]!r}, which is no longer registered "
            "and whose document this run did not record"
        )
    partitions = {name: fit(stage, sites[name])[0] for name in record.sites}
    placements = {name: place(stage, sites[name])[0] for name in record.sites}
    qos = {name: p.qos if p else stage.resources.qos for name, p in placements.items()}
    shares = spread(stage.array_values, record.sites) if stage.array else {}
    return StagePlan(stage.name, tuple(record.sites), partitions, record.choice or "", shares, qos)
