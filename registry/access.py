"""The access rules, all in one place.

- Only the owning partner adds, changes or removes its site.
- A run may only use sites shared with the partner that launches it (`shared_with`:
  partner ids, or "*" for every partner; the owner may always use its own site).
- Only the partner that launched a run may cancel or resume it.
- Only the partner that added a milestone may change it.
"""

from __future__ import annotations

from collections.abc import Iterable

from registry.errors import AccessDenied
from registry.site import ALL_PARTNERS, Site


def check_site_edit(actor: str, new: Site, owner: str | None) -> None:
    """`owner`: the partner the stored site belongs to (None for a new site)."""
    if new.partner != actor:
        raise AccessDenied(
            f"partner {actor!r} cannot register site {new.name!r} for partner "
            f"{new.partner!r}: a site is registered by the partner that owns it"
        )
    if owner is not None and owner != actor:
        raise AccessDenied(
            f"site {new.name!r} belongs to partner {owner!r}; partner {actor!r} cannot change it"
        )


def check_site_remove(actor: str, name: str, owner: str) -> None:
    """Decided on the stored owner alone, so that a broken document stays removable."""
    if owner != actor:
        raise AccessDenied(
            f"site {name!r} belongs to partner {owner!r}; partner {actor!r} cannot remove it"
        )


def may_launch_on(partner: str, site: Site) -> bool:
    return (
        site.partner == partner or ALL_PARTNERS in site.shared_with or partner in site.shared_with
    )


def check_launch(partner: str, sites: Iterable[Site]) -> None:
    for site in sites:
        if not may_launch_on(partner, site):
            raise AccessDenied(
                f"site {site.name!r} (partner {site.partner!r}) is not shared with partner "
                f"{partner!r}; its shared_with is {site.shared_with or '[]'}"
            )


def check_run_control(actor: str, run_partner: str, run_id: str, action: str) -> None:
    if actor != run_partner:
        raise AccessDenied(
            f"run {run_id} was launched by partner {run_partner!r}; "
            f"partner {actor!r} cannot {action} it"
        )


def check_milestone_edit(actor: str, milestone_id: str, owner: str | None) -> None:
    if owner is not None and owner != actor:
        raise AccessDenied(
            f"milestone {milestone_id!r} was added by partner {owner!r}; "
            f"partner {actor!r} cannot change it"
        )
