"""Data residency: the rules, how they pass down the data flow, and planning with them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from flows.planning import plan_run
from flows.residency import ResidencyRefused, check_handoff, guard_handoff
from registry.records import SiteRecord
from registry.residency import EU_COUNTRIES, Residency, output_rules, placement_rules
from registry.runspec import RunSpec
from registry.site import S3Store, Site, Storage
from registry.store import now
from tests.helpers import local_site

CZ = local_site("cz", "cuni", labels={"country": "CZ"})
FI = local_site("fi", "cuni", labels={"country": "fi"}, local={"slots": 1, "gpus": 1})
US = local_site("us", "cuni", labels={"country": "US"}, local={"slots": 1, "gpus": 1})
BARE = local_site("bare", "cuni", local={"slots": 1, "gpus": 1})
SITES = [CZ, FI, US, BARE]


def spec(*stages: dict[str, Any]) -> RunSpec:
    return RunSpec.model_validate(
        {"name": "r", "stages": [{"command": ["true"], **stage} for stage in stages]}
    )


def test_rules_by_country_region_and_site() -> None:
    assert len(EU_COUNTRIES) == 27
    assert Residency(countries=["cz"]).allows(CZ) and not Residency(countries=["CZ"]).allows(FI)
    eu = Residency(region="EU")
    assert eu.allows(CZ) and eu.allows(FI) and not eu.allows(US)
    assert Residency(sites=["fi"]).allows(FI) and not Residency(sites=["fi"]).allows(CZ)
    # A site without a country label is outside every rule, even one naming it.
    assert not eu.allows(BARE) and not Residency(sites=["bare"]).allows(BARE)


@pytest.mark.parametrize(
    "document",
    [{}, {"region": "EU", "countries": ["FI"]}, {"countries": ["FIN"]}, {"region": "US"}],
)
def test_a_rule_is_exactly_one_valid_thing(document: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Residency.model_validate(document)


def test_residency_passes_down_until_a_stage_declassifies() -> None:
    s = spec(
        {"name": "prepare", "site": "cz", "residency": {"countries": ["CZ"]}},
        {"name": "train", "site": "cz", "needs": ["prepare"]},
        {"name": "release", "site": "cz", "needs": ["train"], "declassifies": True},
        {"name": "publish", "site": "us", "needs": ["release"]},
    )
    outputs = output_rules(s.ordered_stages())
    assert [b.origin for b in outputs["train"]] == ["prepare"]
    assert outputs["release"] == () and outputs["publish"] == ()
    placement = placement_rules(s.ordered_stages())
    # The declassifying stage still reads restricted data: it must run where that may go.
    assert [b.origin for b in placement["release"]] == ["prepare"]
    assert placement["publish"] == ()


def test_planning_keeps_a_restricted_stage_on_compliant_sites() -> None:
    s = spec(
        {"name": "prepare", "site": "cz", "residency": {"region": "EU"}},
        {"name": "train", "site": {"require": {"min_gpus": 1}}, "needs": ["prepare"]},
        {
            "name": "evaluate",
            "site": {"any_of": ["us", "fi", "cz"]},
            "needs": ["train"],
            "array": {"language": ["fi", "cs"]},
        },
    )
    plans = plan_run(s, SITES, "cuni")
    assert plans["train"].sites == ("fi",)
    assert "us (country US) is outside residency region EU" in plans["train"].explanation
    assert set(plans["evaluate"].sites) == {"fi", "cz"}


def test_a_stage_that_cannot_be_placed_is_refused_naming_stage_data_rule_and_sites() -> None:
    s = spec(
        {"name": "prepare", "site": "cz", "residency": {"countries": ["CZ"]}},
        {"name": "train", "site": {"any_of": ["fi", "us", "bare"]}, "needs": ["prepare"]},
    )
    with pytest.raises(ResidencyRefused) as refused:
        plan_run(s, SITES, "cuni", source="run.yaml")
    message = str(refused.value)
    assert refused.value.exit_code == 2
    for part in (
        "stages[1].site",
        "'train'",
        "countries CZ",
        "outputs of 'prepare'",
        "fi (country FI)",
        "us (country US)",
        "bare (country not labelled)",
    ):
        assert part in message, part


def test_a_stage_declaring_residency_is_bound_by_it_itself() -> None:
    with pytest.raises(ResidencyRefused, match="'prepare'"):
        plan_run(spec({"name": "prepare", "site": "us", "residency": {"region": "EU"}}), SITES, "x")


def test_handoff_refuses_a_non_compliant_target_or_object_store() -> None:
    restricted = spec({"name": "p", "site": "cz", "residency": {"countries": ["CZ"]}})
    rules = output_rules(restricted.ordered_stages())["p"]
    check_handoff("t", "p", rules, CZ)
    with pytest.raises(ResidencyRefused, match="target site fi"):
        check_handoff("t", "p", rules, FI)
    with pytest.raises(ResidencyRefused, match="object store of us"):
        check_handoff("t", "p", rules, US, "the object store of")


class _Sites:
    """The registry as a stub: the current documents of the sites."""

    def __init__(self, sites: dict[str, Site]) -> None:
        self.sites = sites

    def get_site(self, name: str) -> SiteRecord:
        return SiteRecord(site=self.sites[name], created=now(), updated=now())


def test_guard_judges_sites_as_registered_now_and_the_object_store_too() -> None:
    s = spec(
        {"name": "prepare", "site": "cz", "residency": {"countries": ["CZ"]}},
        {"name": "train", "site": "cz2", "needs": ["prepare"]},
    )
    with_s3 = CZ.model_copy(update={"storage": Storage(s3=S3Store(bucket="data"))})
    cz2 = local_site("cz2", "cuni", labels={"country": "CZ"})
    ctx: Any = SimpleNamespace(
        spec=s, sites={"cz": with_s3, "cz2": cz2}, store=_Sites({"cz": with_s3, "cz2": cz2})
    )
    guard_handoff(ctx, "train", "prepare", "cz", "cz2")
    # The source's owner moved its object store abroad: staging through it is refused.
    ctx.store = _Sites({"cz": with_s3.model_copy(update={"labels": {"country": "US"}}), "cz2": cz2})
    with pytest.raises(ResidencyRefused, match="object store of cz"):
        guard_handoff(ctx, "train", "prepare", "cz", "cz2")
    ctx.store = _Sites({"cz": with_s3, "cz2": cz2.model_copy(update={"labels": {}})})
    with pytest.raises(ResidencyRefused, match="target site cz2 \\(country not labelled\\)"):
        guard_handoff(ctx, "train", "prepare", "cz", "cz2")
