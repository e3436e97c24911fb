"""Gathering the facts of a run's provenance: from the store (spec, files, stages, jobs,
output manifests, launch facts), from MLflow (metrics) and from the sites (the rendered
batch scripts, the container image's digest). `flows.crate` writes them as a Workflow
Run RO-Crate.

A site that cannot be reached leaves out only what needs it (its scripts and image
digest), with a note; the crate is still written.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from flows.jobs import build_request
from flows.layout import StageLayout
from flows.planning import fit
from flows.redaction import masked_env
from flows.tracking import Tracker
from registry import manifests
from registry.errors import HpcfleetError
from registry.manifests import ManifestEntry
from registry.partner import Partner
from registry.records import JobRecord, RunRecord, StageRecord
from registry.residency import BoundRule, output_rules
from registry.site import Site
from registry.store import Store
from sites.driver import SiteDriver, render_job_script

log = logging.getLogger(__name__)

DriverFor = Callable[[Site], SiteDriver]
MetricsReader = Callable[[RunRecord], tuple[dict[str, float], dict[str, dict[str, float]]]]


@dataclass(frozen=True)
class ImageFacts:
    path: str
    size: int | None = None
    mtime: int | None = None
    sha256: str | None = None


@dataclass
class RunFacts:
    run: RunRecord
    partner: Partner
    stages: list[StageRecord]
    jobs: list[JobRecord]
    files: dict[str, tuple[bytes, int]]
    sites: dict[str, Site]
    outputs: list[ManifestEntry]
    launch: dict[str, Any]
    residency: dict[str, tuple[BoundRule, ...]]
    # (stage, attempt, site) -> the batch script, re-rendered from the stored facts
    scripts: dict[tuple[str, int, str], str] = field(default_factory=dict)
    partitions: dict[tuple[str, str], str | None] = field(default_factory=dict)
    images: dict[str, ImageFacts] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # mlflow run id ->
    run_metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def gather(
    store: Store,
    run_id: str,
    *,
    driver_for: DriverFor | None = None,
    metrics: MetricsReader | None = None,
    run: RunRecord | None = None,
) -> RunFacts:
    """Everything the crate of `run_id` says; sites are asked only through `driver_for`.
    `run`: the run's record as it ends, when that is not stored yet."""
    run = run or store.get_run(run_id)
    jobs = store.jobs(run_id)
    names = sorted({j.site for j in jobs} | {s for st in store.stages(run_id) for s in st.sites})
    sites: dict[str, Site] = {}
    for name in names:
        try:
            sites[name] = store.get_site(name).site
        except HpcfleetError:
            log.warning("site %s is no longer registered; the crate names it only", name)
    facts = RunFacts(
        run=run,
        partner=store.get_partner(run.partner),
        stages=store.stages(run_id),
        jobs=jobs,
        files=store.run_files(run_id),
        sites=sites,
        outputs=manifests.outputs(store, run_id),
        launch=manifests.launch_facts(store, run_id),
        residency=output_rules(run.spec.ordered_stages()),
    )
    for stage in facts.stages:
        for name in stage.sites:
            if name in sites:
                facts.partitions[(stage.name, name)] = fit(run.spec.stage(stage.name), sites[name])[
                    0
                ]
    if metrics is not None:
        try:
            facts.run_metrics, facts.metrics = metrics(run)
        except HpcfleetError as exc:
            facts.notes.append(f"metrics unavailable: {exc}")
    if driver_for is not None:
        for site in sites.values():
            _ask_site(facts, site, driver_for, store)
    return facts


def metrics_from(tracker: Tracker) -> MetricsReader:
    """The last value of each metric: of the run's MLflow parent, and of each child."""

    def read(run: RunRecord) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        children = tracker.children(tracker.experiment_id(run.experiment), run.run_id)
        # The parent carries the run id tag too: it is among them.
        per_run = {c.info.run_id: dict(c.data.metrics) for c in children}
        return per_run.pop(run.mlflow_run_id or "", {}), per_run

    return read


def _ask_site(facts: RunFacts, site: Site, driver_for: DriverFor, store: Store) -> None:
    try:
        driver = driver_for(site)
        for key, script in _scripts(facts, driver).items():
            facts.scripts[key] = script
        container = site.environment.container
        if container is not None:
            facts.images[site.name] = image_facts(driver, container.image, store)
    except HpcfleetError as exc:
        facts.notes.append(f"site {site.name}: scripts and image digest unavailable: {exc}")


def _scripts(facts: RunFacts, driver: SiteDriver) -> dict[tuple[str, int, str], str]:
    """Each attempt's batch script on this site, rendered again as it was submitted
    (withheld environment values masked)."""
    spec, run_id, site = facts.run.spec, facts.run.run_id, driver.site
    attempts: dict[tuple[str, int], list[JobRecord]] = {}
    for job in facts.jobs:
        if job.site == site.name:
            attempts.setdefault((job.stage, job.attempt), []).append(job)
    # The site's env is rendered into the script by its scheduler: masked there too.
    environment = site.environment.model_copy(update={"env": masked_env(site.environment.env)})
    shown = site.model_copy(update={"environment": environment})
    scripts = {}
    for (stage, attempt), jobs in sorted(attempts.items()):
        share = sorted(
            (j.array_index, j.array_value)
            for j in jobs
            if j.array_index is not None and j.array_value is not None
        )
        request = build_request(
            spec,
            spec.stage(stage),
            site,
            run_id=run_id,
            attempt=attempt,
            layout=StageLayout(driver.workdir, run_id, stage),
            partition=facts.partitions.get((stage, site.name)),
            share=share,
        )
        request = replace(request, env=masked_env(request.env))
        scripts[(stage, attempt, site.name)] = render_job_script(shown, request, driver.workdir)
    return scripts


def image_stat_command(path: str) -> str:
    return f"stat -L -c '%s %Y' -- {shlex.quote(path)}"


def parse_image_stat(returncode: int, stdout: str, stderr: str) -> tuple[int, int] | None:
    """(size, mtime) of the image; None when it does not exist or cannot be read."""
    if returncode != 0:
        return None
    parts = stdout.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def image_digest_command(path: str) -> str:
    return f"sha256sum -- {shlex.quote(path)}"


def parse_image_digest(returncode: int, stdout: str, stderr: str) -> str | None:
    digest = stdout.split(maxsplit=1)[0] if stdout.strip() else ""
    if returncode != 0 or len(digest) != 64:
        return None
    return digest.lower()


def image_facts(driver: SiteDriver, path: str, store: Store) -> ImageFacts:
    """The image's size, mtime and sha256: hashed on the site once, then kept in the
    store by site, path, size and mtime (an image is gigabytes; hashing it per crate
    is not an option)."""
    result = driver.transport.run(image_stat_command(path))
    stat = parse_image_stat(result.returncode, result.stdout, result.stderr)
    if stat is None:
        return ImageFacts(path)
    size, mtime = stat
    known = manifests.image_digest(store, driver.name, path, size, mtime)
    if known is None:
        result = driver.transport.run(image_digest_command(path))
        known = parse_image_digest(result.returncode, result.stdout, result.stderr)
        if known is None:
            return ImageFacts(path, size, mtime)
        manifests.put_image_digest(store, driver.name, path, size, mtime, known)
    return ImageFacts(path, size, mtime, known)
