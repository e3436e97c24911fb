"""Data residency: where a stage's outputs may be processed, staged and stored. Pure.

A stage declares `residency: {countries: [FI, CZ]}`, `{region: EU}` or `{sites: [lumi]}`
on its outputs. A site satisfies a rule only through its `labels.country`: a site
without a country label is outside every rule (even one that names it), so that data
never lands somewhere nobody has said where it is.

Rules pass down the data flow: a stage that reads restricted data is itself bound by
the rule, and so are its outputs, unless it says `declassifies: true` (a model trained
on restricted text, say). Several rules on one stage must all hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self

from pydantic import field_validator, model_validator

from registry.common import Identifier, StrictModel
from registry.site import Site

# The 27 member states of the European Union (ISO 3166-1 alpha-2).
# fmt: off
EU_COUNTRIES = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
})
# fmt: on
REGIONS: dict[str, frozenset[str]] = {"EU": EU_COUNTRIES}


class Residency(StrictModel):
    """Where outputs may live: exactly one of `countries`, `region` or `sites`."""

    countries: list[str] | None = None
    region: Literal["EU"] | None = None
    sites: list[Identifier] | None = None

    @field_validator("countries")
    @classmethod
    def _country_codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        codes = [code.upper() for code in value]
        for code in codes:
            if len(code) != 2 or not code.isalpha():
                raise ValueError(f"{code!r} is not a two-letter country code (ISO 3166-1)")
        return codes

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("countries", "region", "sites") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of: countries: [..], region: EU, sites: [..]")
        if self.countries == [] or self.sites == []:
            raise ValueError("list at least one country or site")
        return self

    def describe(self) -> str:
        if self.countries is not None:
            return f"countries {', '.join(self.countries)}"
        if self.region is not None:
            return f"region {self.region}"
        return f"sites {', '.join(self.sites or [])}"

    def allows(self, site: Site) -> bool:
        country = site_country(site)
        if country is None:
            return False
        if self.countries is not None:
            return country in self.countries
        if self.region is not None:
            return country in REGIONS[self.region]
        return site.name in (self.sites or [])


def site_country(site: Site) -> str | None:
    country = site.labels.get("country")
    return country.strip().upper() if country and country.strip() else None


@dataclass(frozen=True)
class BoundRule:
    """A residency rule and the stage whose outputs declared it (the data it protects)."""

    origin: str
    rule: Residency

    def describe(self) -> str:
        return f"{self.rule.describe()} (outputs of {self.origin!r})"


class StageLike(Protocol):
    """What residency needs of a stage; `registry.runspec.Stage` has these fields."""

    @property
    def name(self) -> str: ...
    @property
    def needs(self) -> list[str]: ...
    @property
    def residency(self) -> Residency | None: ...
    @property
    def declassifies(self) -> bool: ...


class SpecLike(Protocol):
    def ordered_stages(self) -> Sequence[StageLike]: ...


def output_rules(ordered: Sequence[StageLike]) -> dict[str, tuple[BoundRule, ...]]:
    """The rules that bind each stage's outputs; `ordered` lists needs before users."""
    found: dict[str, tuple[BoundRule, ...]] = {}
    for stage in ordered:
        own = (BoundRule(stage.name, stage.residency),) if stage.residency else ()
        inherited = () if stage.declassifies else _read_rules(stage, found)
        found[stage.name] = _unique(own + inherited)
    return found


def placement_rules(ordered: Sequence[StageLike]) -> dict[str, tuple[BoundRule, ...]]:
    """The rules a site must satisfy to run each stage: those of the data it reads and
    of the outputs it writes."""
    outputs = output_rules(ordered)
    return {s.name: _unique(_read_rules(s, outputs) + outputs[s.name]) for s in ordered}


def _read_rules(
    stage: StageLike, outputs: Mapping[str, tuple[BoundRule, ...]]
) -> tuple[BoundRule, ...]:
    return tuple(bound for need in stage.needs for bound in outputs[need])


def output_residency(spec: SpecLike) -> dict[str, list[str]]:
    """Each stage's output residency as sentences (for `run show` and the crate)."""
    return {
        name: [bound.describe() for bound in rules]
        for name, rules in output_rules(spec.ordered_stages()).items()
    }


def violations(rules: Iterable[BoundRule], site: Site) -> list[BoundRule]:
    return [bound for bound in rules if not bound.rule.allows(site)]


def explain_site(site: Site) -> str:
    return f"{site.name} (country {site_country(site) or 'not labelled'})"


def _unique(rules: tuple[BoundRule, ...]) -> tuple[BoundRule, ...]:
    seen: list[BoundRule] = []
    for bound in rules:
        if bound not in seen:
            seen.append(bound)
    return tuple(seen)
