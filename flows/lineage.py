"""What made this file: output manifests stored at collection, and the walk back from a
file through the stages, sites, jobs and inputs that produced it to the first stage."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.context import RunContext
from registry import manifests
from registry.errors import NotFoundError
from registry.manifests import ManifestEntry
from registry.records import JobRecord
from registry.states import JobState
from registry.store import Store

log = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def remember_outputs(
    ctx: RunContext, stage: str, site: str, entries: Mapping[str, tuple[int, str]]
) -> None:
    """Store the manifest of `stage`'s outputs on `site` (called where they are hashed)."""
    attempt = next((s.attempt for s in ctx.store.stages(ctx.run_id) if s.name == stage), 0)
    left_out = manifests.put_outputs(ctx.store, ctx.run_id, stage, site, attempt, entries)
    if left_out:
        log.warning(
            "outputs of %s on %s: %d files beyond the first %d not kept in the manifest",
            stage,
            site,
            left_out,
            manifests.MAX_ENTRIES,
        )


@dataclass(frozen=True)
class Step:
    """One stage of a run on the sites that made the files it lists."""

    run_id: str
    stage: str
    kind: str
    files: tuple[ManifestEntry, ...]
    jobs: tuple[JobRecord, ...]
    inputs: tuple[Step, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "stage": self.stage,
            "kind": self.kind,
            "sites": sorted({f.site for f in self.files} | {j.site for j in self.jobs}),
            "files": [f.model_dump(exclude={"run_id", "stage"}) for f in self.files],
            "jobs": [_job_dict(job) for job in self.jobs],
            "inputs": [step.as_dict() for step in self.inputs],
        }


def resolve(target: str) -> tuple[str | None, str | None]:
    """(sha256, path) to look up for `target`: a checksum, a local file, or a path."""
    if SHA256.match(target):
        return target.lower(), None
    local = Path(target)
    if local.is_file():
        digest = hashlib.sha256()
        with local.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest(), None
    return None, target


def lineage(store: Store, target: str) -> list[Step]:
    """Every stored output matching `target`, each with the chain of stages behind it."""
    sha256, path = resolve(target)
    found = manifests.find(store, sha256=sha256, path=path)
    if not found:
        what = f"sha256 {sha256}" if sha256 else f"path {path!r}"
        raise NotFoundError(
            f"no stored output has {what}; manifests are recorded for declared outputs "
            "of completed stages"
        )
    return [_step(store, entry.run_id, entry.stage, (entry,), {}) for entry in found]


def _step(
    store: Store,
    run_id: str,
    stage: str,
    files: tuple[ManifestEntry, ...],
    seen: dict[tuple[str, str], Step],
) -> Step:
    spec = store.get_run(run_id).spec
    definition = spec.stage(stage)
    sites = {f.site for f in files}
    jobs = tuple(
        job
        for job in store.jobs(run_id, stage)
        if job.state is JobState.COMPLETED and (not sites or job.site in sites)
    )
    inputs = []
    for need in definition.needs:
        if (run_id, need) not in seen:
            produced = tuple(manifests.outputs(store, run_id, need))
            seen[(run_id, need)] = _step(store, run_id, need, produced, seen)
        inputs.append(seen[(run_id, need)])
    return Step(run_id, stage, definition.kind, files, jobs, tuple(inputs))


def render(step: Step, *, depth: int = 0, max_files: int = 3) -> list[str]:
    """Indented lines for `hpcfleet lineage`: a stage, where it ran, what it made."""
    pad = "  " * depth
    head = "made by" if depth == 0 else "from"
    jobs = ", ".join(_job_text(job) for job in step.jobs) or "no completed job recorded"
    lines = [f"{pad}{head} run {step.run_id} stage {step.stage} ({step.kind}): {jobs}"]
    for entry in step.files[:max_files]:
        lines.append(f"{pad}  {entry.site}:{entry.path}  {entry.size} B  sha256 {entry.sha256}")
    if len(step.files) > max_files:
        lines.append(f"{pad}  ... and {len(step.files) - max_files} more files")
    for parent in step.inputs:
        lines.extend(render(parent, depth=depth + 1, max_files=max_files))
    return lines


def _job_text(job: JobRecord) -> str:
    cell = f"[{job.array_value}]" if job.array_value is not None else ""
    node = f" on {job.node}" if job.node else ""
    return f"{job.site} job {job.scheduler_id or '?'}{cell}{node} attempt {job.attempt}"


def _job_dict(job: JobRecord) -> dict[str, Any]:
    return job.model_dump(
        mode="json",
        include={
            "site",
            "scheduler_id",
            "attempt",
            "array_value",
            "node",
            "state",
            "started",
            "ended",
            "gpu_hours",
        },
    )
