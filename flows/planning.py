"""Choosing the sites of each stage: by name, `any_of`, or `require`. Pure.

Only sites shared with the launching partner are candidates. A site fits a stage when
one of its partitions offers the GPUs (count and type) the stage needs, and its labels
match. Among fitting sites, shorter queues (from the last probe) and more remaining
allocation come first. An array stage is spread over every fitting site; any other
stage runs on the best one. Every choice comes with a sentence that says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flows.residency import keep_resident
from registry.access import may_launch_on
from registry.errors import AccessDenied, DocumentError
from registry.records import ProbeRecord
from registry.residency import BoundRule, placement_rules
from registry.runspec import RunSpec, Stage
from registry.site import Site


@dataclass(frozen=True)
class StagePlan:
    stage: str
    sites: tuple[str, ...]
    partitions: Mapping[str, str | None]  # site -> partition (None: the site's default)
    explanation: str
    # site -> [(array index, array value)]; empty for a non-array stage
    shares: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)


def plan_run(
    spec: RunSpec,
    sites: Sequence[Site],
    partner: str,
    probes: Mapping[str, ProbeRecord] | None = None,
    *,
    remaining: Mapping[str, float] | None = None,
    source: str = "run spec",
) -> dict[str, StagePlan]:
    """Plan every stage; raise DocumentError / AccessDenied naming the stage's field.

    `remaining` is each site's GPU-hours left in its allocation (the ledger); without
    it, the granted total ranks the sites.
    """
    by_name = {s.name: s for s in sites}
    residency = placement_rules(spec.ordered_stages())
    plans: dict[str, StagePlan] = {}
    for index, stage in enumerate(spec.stages):
        field_name = f"stages[{index}].site"
        plans[stage.name] = plan_stage(
            stage,
            by_name,
            partner,
            probes or {},
            source=source,
            field=field_name,
            remaining=remaining or {},
            residency=residency[stage.name],
        )
    return plans


def plan_stage(
    stage: Stage,
    sites: Mapping[str, Site],
    partner: str,
    probes: Mapping[str, ProbeRecord],
    *,
    source: str,
    field: str,
    remaining: Mapping[str, float] | None = None,
    residency: Sequence[BoundRule] = (),
) -> StagePlan:
    selector = stage.site
    if selector.require is None:
        named = selector.named_sites()
        unknown = [n for n in named if n not in sites]
        if unknown:
            known = ", ".join(sorted(sites)) or "none registered"
            raise DocumentError(
                f"unknown site {unknown[0]!r}; registered sites: {known}",
                source=source,
                field=field,
            )
        candidates = [sites[n] for n in named]
        shared = [s for s in candidates if may_launch_on(partner, s)]
        if not shared:
            site = candidates[0]
            raise AccessDenied(
                f"{source}: {field}: site {site.name!r} (partner {site.partner!r}) is not "
                f"shared with partner {partner!r}"
            )
        why = "named in the spec" if selector.name else f"any_of {list(named)}"
    else:
        shared = [s for s in sites.values() if may_launch_on(partner, s)]
        why = f"require {selector.require.model_dump(exclude_defaults=True)}"

    shared, refusals = keep_resident(stage.name, residency, shared, source=source, field=field)
    fitting: list[tuple[Site, str | None]] = []
    for site in shared:
        partition, problem = fit(stage, site)
        if problem is None:
            fitting.append((site, partition))
        else:
            refusals.append(f"{site.name}: {problem}")
    if not fitting:
        detail = "; ".join(refusals) or f"no site is shared with partner {partner!r}"
        raise DocumentError(
            f"no site can run stage {stage.name!r} ({why}): {detail}", source=source, field=field
        )
    left = remaining or {}
    fitting.sort(key=lambda pair: _rank(pair[0], probes, left))
    if not stage.array:
        fitting = fitting[:1]
    chosen = tuple(site.name for site, _ in fitting)
    partitions = {site.name: partition for site, partition in fitting}
    shares = spread(stage.array_values, chosen) if stage.array else {}
    explanation = _explain(stage, why, fitting, refusals, probes, left)
    return StagePlan(stage.name, chosen, partitions, explanation, shares)


def fit(stage: Stage, site: Site) -> tuple[str | None, str | None]:
    """(partition, None) when `site` can run `stage`, else (None, why not)."""
    selector = stage.site
    requirement = selector.require
    labels = requirement.labels if requirement else {}
    for key, value in labels.items():
        if site.labels.get(key) != value:
            return None, f"label {key}={value!r} not set (has {site.labels.get(key)!r})"
    min_gpus = max(stage.resources.gpus, requirement.min_gpus if requirement else 0)
    gpu_type = requirement.gpu_type if requirement else None
    wanted = stage.resources.partition
    options = site.gpu_partitions()
    if wanted is not None:
        if site.scheduler == "local":
            return None, f"partition {wanted!r} given but the site is a local one"
        options = [o for o in options if o[0] == wanted]
        if not options:
            names = ", ".join(p for p, _, _ in site.gpu_partitions())
            return None, f"no partition {wanted!r} (has {names})"
    for partition, gpus, kind in options:
        if gpus >= min_gpus and (gpu_type is None or kind == gpu_type):
            if site.scheduler == "local":
                return None, None
            if wanted is None and min_gpus == 0 and site.slurm is not None:
                return None, None  # the site's default partition
            return partition, None
    kind_text = f" of type {gpu_type}" if gpu_type else ""
    return None, f"no partition with {min_gpus} GPU(s){kind_text} per node"


def spread(values: Sequence[str], sites: Sequence[str]) -> dict[str, tuple[tuple[int, str], ...]]:
    """Split array values into contiguous, near-equal shares, one per site."""
    shares: dict[str, tuple[tuple[int, str], ...]] = {}
    count, start = len(sites), 0
    for position, site in enumerate(sites):
        size = len(values) // count + (1 if position < len(values) % count else 0)
        shares[site] = tuple((i, values[i]) for i in range(start, start + size))
        start += size
    return {site: share for site, share in shares.items() if share}


def _rank(
    site: Site, probes: Mapping[str, ProbeRecord], remaining: Mapping[str, float]
) -> tuple[int, float, str]:
    probe = probes.get(site.name)
    queue = probe.queue_depth if probe and probe.queue_depth is not None else 0
    return (queue, -_left(site, remaining), site.name)


def _left(site: Site, remaining: Mapping[str, float]) -> float:
    if site.name in remaining:
        return remaining[site.name]
    return site.allocation.gpu_hours if site.allocation else float("inf")


def _explain(
    stage: Stage,
    why: str,
    fitting: list[tuple[Site, str | None]],
    refusals: list[str],
    probes: Mapping[str, ProbeRecord],
    remaining: Mapping[str, float],
) -> str:
    parts = []
    for site, partition in fitting:
        probe = probes.get(site.name)
        notes = [f"partition {partition}"] if partition else []
        if probe is not None and probe.queue_depth is not None:
            notes.append(f"queue {probe.queue_depth}")
        if site.allocation is not None:
            notes.append(f"{_left(site, remaining):,.0f} GPU-h left")
        parts.append(site.name + (f" ({', '.join(notes)})" if notes else ""))
    text = f"{why}: " + ", ".join(parts)
    if stage.array and len(fitting) > 1:
        text += f"; {len(stage.array_values)} array values spread over {len(fitting)} sites"
    if refusals:
        text += "; not chosen: " + "; ".join(refusals)
    return text
