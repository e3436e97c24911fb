"""Data residency at the two places data moves: planning (where a stage may run) and
handoff (where a stage's inputs may be staged, and through which object store). Pure.

The rules themselves, and how they pass down the data flow, are in
`registry.residency`; here they meet sites.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import DocumentError
from registry.residency import BoundRule, explain_site, violations
from registry.site import Site


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
    stage: str,
    needed: str,
    rules: Sequence[BoundRule],
    target: Site,
    store: Site | None,
) -> None:
    """Refuse to stage `needed`'s outputs on `target` (through `store`'s S3, if any) when
    either is outside a rule that binds those outputs."""
    for role, site in (("target site", target), ("object store of", store)):
        if site is None:
            continue
        broken = violations(rules, site)
        if broken:
            raise ResidencyRefused(
                f"refusing to stage the outputs of {needed!r} for stage {stage!r}: "
                f"{role} {explain_site(site)} is outside residency {broken[0].describe()}"
            )


def _rules_text(rules: Sequence[BoundRule]) -> str:
    return "; ".join(bound.describe() for bound in rules)
