"""`hpcfleet run launch --dry-run`: everything a launch checks and plans, and the exact
batch script each stage would submit on each site, with nothing stored or submitted.

The store is only read (sites, probes, the ledger); no site is contacted: a SLURM
script is rendered by the same pure `render_sbatch` that `SlurmScheduler.submit`
uses, a local one by the local scheduler's `render`. A work directory that a launch
would resolve on the login node (`~/...`, relative) is shown unresolved.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from flows.jobs import build_request
from flows.launch import check_launch
from flows.layout import StageLayout
from flows.planning import StagePlan
from registry.runspec import RunSpec
from registry.site import Site
from registry.store import Store
from sites.driver import local_workdir, render_job_script
from sites.scheduler import JobRequest

# Stands for the id a real launch would draw (job names and paths contain it).
DRY_RUN_ID = "dry-run"


@dataclass(frozen=True)
class PlannedJob:
    """One stage's job on one site, as a launch would submit it first."""

    stage: str
    site: str
    partition: str | None
    qos: str | None
    why: str
    script: str
    login: bool = False  # a `where: login` stage: a task on the login node, not a job


@dataclass(frozen=True)
class DryRun:
    jobs: list[PlannedJob]
    warnings: list[str]


def dry_run(
    store: Store, spec_path: Path, partner: str, sites_root: Path, *, strict: bool = False
) -> DryRun:
    """Check and plan as `launch` does (same errors), and render every first attempt.

    `sites_root` is where local sites without a work dir keep their files.
    """
    checked = check_launch(store, spec_path, partner, strict=strict)
    sites = {record.site.name: record.site for record in store.list_sites()}
    jobs: list[PlannedJob] = []
    for name in checked.spec.order:
        plan = checked.plans[name]
        for site_name in plan.sites:
            site = sites[site_name]
            request = _first_request(checked.spec, name, site, plan, sites_root)
            jobs.append(
                PlannedJob(
                    stage=name,
                    site=site_name,
                    partition=request.resources.partition,
                    qos=request.resources.qos
                    or (site.slurm.qos if site.slurm and request.where == "batch" else None),
                    why=plan.explanation,
                    script=render(site, request, sites_root),
                    login=request.where == "login",
                )
            )
    return DryRun(jobs, checked.warnings)


def _first_request(
    spec: RunSpec, name: str, site: Site, plan: StagePlan, sites_root: Path
) -> JobRequest:
    layout = StageLayout(_workdir(site, sites_root), DRY_RUN_ID, name)
    partition = plan.partitions.get(site.name)
    if partition is None and site.slurm is not None:
        partition = site.slurm.default_partition.name
    return build_request(
        spec,
        spec.stage(name),
        site,
        run_id=DRY_RUN_ID,
        attempt=1,
        layout=layout,
        partition=partition,
        qos=plan.qos.get(site.name),
        share=plan.shares.get(site.name, ()),
    )


def _workdir(site: Site, sites_root: Path) -> str:
    if site.ssh is None:
        return local_workdir(site, sites_root)
    configured = site.environment.workdir or "hpcfleet"
    if configured.startswith("/"):
        return configured
    return posixpath.join("~", configured.removeprefix("~").lstrip("/"))


def render(site: Site, request: JobRequest, sites_root: Path) -> str:
    """The script the site's scheduler would submit for `request` (pure)."""
    return render_job_script(site, request, _workdir(site, sites_root))


def format_dry_run(result: DryRun, spec_path: Path) -> str:
    """The text `run launch --dry-run` prints."""
    lines = [
        f"Dry run of {spec_path}: nothing was stored or submitted "
        f"(run id {DRY_RUN_ID!r} stands for the one a launch draws).",
    ]
    for job in result.jobs:
        where = [f"site {job.site}"]
        if job.partition:
            where.append(f"partition {job.partition}")
        if job.qos:
            where.append(f"QOS {job.qos}")
        lines += ["", f"== stage {job.stage}: {', '.join(where)}", f"why: {job.why}"]
        kind = "login-node script" if job.login else "batch script"
        lines += [f"--- {kind} ({job.site}) ---", job.script.rstrip("\n"), "---"]
    return "\n".join(lines) + "\n"
