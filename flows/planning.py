"""Choosing the sites of each stage: by name, `any_of`, or `require`. Pure.

Only sites shared with the launching partner are candidates. A site fits a stage when
one of its partitions offers the GPUs (count and type) the stage needs, and its labels
match. Among fitting sites, shorter queues (from the last probe) and more remaining
allocation come first. An array stage is spread over every fitting site; any other
stage runs on the best one. Every choice comes with a sentence that says why.

A run is planned again when its orchestrator starts or resumes, and a stage's sites are
checked once more just before it starts (`placement_refusal`): a stage is never placed
on a site that was removed from the registry, or is no longer shared with the run's
partner, since the run was launched. It fails instead, with a sentence naming the site
and the reason (`plan_launched_stage`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from flows.placement import Placement, place
from flows.residency import keep_resident
from registry.access import may_launch_on
from registry.errors import AccessDenied, DocumentError
from registry.records import ProbeRecord
from registry.residency import BoundRule, placement_rules
from registry.runspec import RunSpec, Stage
from registry.site import Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagePlan:
    stage: str
    sites: tuple[str, ...]
    partitions: Mapping[str, str | None]  # site -> partition (None: the site's default)
    explanation: str
    # site -> [(array index, array value)]; empty for a non-array stage
    shares: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    qos: Mapping[str, str | None] = field(default_factory=dict)  # site -> QOS (None: site's)
    # Why the stage may not be placed at all (then `sites` is empty): it fails with this.
    refusal: str | None = None


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
    fitting: list[tuple[Site, Placement]] = []
    for site in shared:
        label_problem = _label_problem(stage, site)
        placement, problem = (None, label_problem) if label_problem else place(stage, site)
        if placement is not None:
            fitting.append((site, placement))
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
    partitions = {site.name: placement.partition for site, placement in fitting}
    qos = {site.name: placement.qos for site, placement in fitting}
    shares = spread(stage.array_values, chosen) if stage.array else {}
    explanation = _explain(stage, why, fitting, refusals, probes, left)
    return StagePlan(stage.name, chosen, partitions, explanation, shares, qos)


def fit(stage: Stage, site: Site) -> tuple[str | None, str | None]:
    """(partition, None) when `site` can run `stage`, else (None, why not). A local site
    has no partition (None); `flows.placement.place` also says which QOS, and why."""
    label_problem = _label_problem(stage, site)
    if label_problem:
        return None, label_problem
    placement, problem = place(stage, site)
    return (placement.partition, None) if placement else (None, problem)


def _label_problem(stage: Stage, site: Site) -> str | None:
    labels = stage.site.require.labels if stage.site.require else {}
    for key, value in labels.items():
        if site.labels.get(key) != value:
            return f"label {key}={value!r} not set (has {site.labels.get(key)!r})"
    return None


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
    fitting: list[tuple[Site, Placement]],
    refusals: list[str],
    probes: Mapping[str, ProbeRecord],
    remaining: Mapping[str, float],
) -> str:
    parts = []
    for site, placement in fitting:
        probe = probes.get(site.name)
        notes = [placement.why] if placement.partition or stage.where == "login" else []
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


def placement_refusal(site_name: str, partner: str, registered: Mapping[str, Site]) -> str | None:
    """Why a new stage of a run of `partner` may not go to `site_name` now, or None."""
    site = registered.get(site_name)
    if site is None:
        return f"site {site_name!r} was removed from the registry"
    if not may_launch_on(partner, site):
        return (
            f"site {site_name!r} (partner {site.partner!r}) is no longer shared with "
            f"partner {partner!r}"
        )
    return None


def plan_launched_stage(
    stage: Stage,
    registered: Mapping[str, Site],
    partner: str,
    probes: Mapping[str, ProbeRecord],
    *,
    field: str = "site",
) -> StagePlan:
    """Plan a stage, not started yet, of a run launched earlier.

    Unlike `plan_stage`, this never raises: where the stage cannot be placed (e.g. the
    sites it names were removed or unshared since the launch), the plan is a refusal
    that says why, and the stage fails with it. An `any_of` stage keeps the named sites
    that are still usable.
    """
    selector = stage.site
    named = selector.named_sites() if selector.require is None else ()
    verdicts = {n: placement_refusal(n, partner, registered) for n in named}
    refusals = [why for why in verdicts.values() if why]
    usable = [n for n, why in verdicts.items() if why is None]
    if refusals and not usable:
        return StagePlan(stage.name, (), {}, "", refusal="; ".join(refusals))
    if refusals and selector.any_of is not None:
        narrowed = selector.model_copy(update={"any_of": usable})
        stage = stage.model_copy(update={"site": narrowed})
    try:
        plan = plan_stage(stage, registered, partner, probes, source="run spec", field=field)
    except (DocumentError, AccessDenied) as exc:
        return StagePlan(stage.name, (), {}, "", refusal="; ".join(refusals) or str(exc))
    if refusals:
        plan = replace(plan, explanation=f"{plan.explanation}; not usable: {'; '.join(refusals)}")
    return plan


def recorded_sites(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Site]:
    """The site documents a run recorded (`RunRecord.site_documents`), as sites; one that
    no longer validates (written by another hpcfleet) is left out with a warning."""
    sites = {}
    for name, document in documents.items():
        try:
            sites[name] = Site.model_validate(document)
        except ValidationError as exc:
            log.warning("the recorded document of site %r is not valid any more: %s", name, exc)
    return sites
