"""Data residency at the two places data moves: planning (where a stage may run) and
handoff (where a stage's inputs may be staged, and through which object store). Pure.

The rules themselves, and how they pass down the data flow, are in
`registry.residency`; here they meet sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from registry.errors import DocumentError, NotFoundError
from registry.residency import BoundRule, explain_site, output_rules, violations
from registry.site import Site

if TYPE_CHECKING:
    from flows.context import RunContext


class ResidencyRefused(DocumentError):
    """Restricted data would be processed, staged or stored outside its residency."""


def keep_resident(
    stage: str,
    rules: Sequence[BoundRule],
    candidates: Sequence[Site],
    *,
    source: str,
    field: str,
) -> tuple[list[Site], list[str]]:
    """The candidates that satisfy every rule, and a note on each that does not.

    Raises ResidencyRefused when there were candidates and none satisfies the rules: the
    message names the stage, the data, the rule and every site considered.
    """
    kept: list[Site] = []
    notes: list[str] = []
    for site in candidates:
        broken = violations(rules, site)
        if broken:
            notes.append(f"{explain_site(site)} is outside residency {broken[0].describe()}")
        else:
            kept.append(site)
    if candidates and not kept:
        considered = ", ".join(explain_site(site) for site in candidates)
        raise ResidencyRefused(
            f"stage {stage!r} cannot be placed: its data must stay within "
            f"{_rules_text(rules)}; sites considered: {considered}",
            source=source,
            field=field,
        )
    return kept, notes


def check_handoff(
    stage: str, needed: str, rules: Sequence[BoundRule], site: Site, role: str = "target site"
) -> None:
    """Refuse to stage `needed`'s outputs for `stage` on (or through) `site` when it is
    outside a rule that binds those outputs."""
    broken = violations(rules, site)
    if broken:
        raise ResidencyRefused(
            f"refusing to stage the outputs of {needed!r} for stage {stage!r}: "
            f"{role} {explain_site(site)} is outside residency {broken[0].describe()}"
        )


def _rules_text(rules: Sequence[BoundRule]) -> str:
    return "; ".join(bound.describe() for bound in rules)


def guard_handoff(ctx: RunContext, stage: str, needed: str, source: str, target: str) -> None:
    """Before `needed`'s outputs move from `source` to `target` for `stage`: refuse if
    the target, or the site whose object store the handoff goes through, breaks their
    residency (also on the same site: the data would be processed there).

    Sites are judged as registered now (labels may have changed since launch) and as
    the run recorded them: both must comply.
    """
    rules = output_rules(ctx.spec.ordered_stages())[needed]
    if not rules:
        return
    for site in _site_versions(ctx, target):
        check_handoff(stage, needed, rules, site)
    through = next((n for n in (source, target) if _has_object_store(ctx.sites[n])), None)
    if through is not None and source != target:
        for site in _site_versions(ctx, through):
            check_handoff(stage, needed, rules, site, "the object store of")


def _has_object_store(site: Site) -> bool:
    return site.storage is not None and site.storage.s3 is not None


def _site_versions(ctx: RunContext, name: str) -> list[Site]:
    try:
        current = ctx.store.get_site(name).site
    except NotFoundError:
        return [ctx.sites[name]]
    return [current, ctx.sites[name]]
