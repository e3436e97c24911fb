"""Site selection for `name`, `any_of` and `require`, with access and fit checks."""

from __future__ import annotations

import pytest

from flows.planning import placement_refusal, plan_launched_stage, plan_run, spread
from registry.errors import AccessDenied, DocumentError
from registry.records import ProbeRecord
from registry.runspec import RunSpec
from registry.site import Site
from registry.store import now
from tests.helpers import local_site

SLURM = Site.model_validate(
    {
        "name": "lumi",
        "partner": "csc",
        "scheduler": "slurm",
        "shared_with": ["*"],
        "labels": {"country": "FI"},
        "slurm": {
            "account": "p1",
            "partitions": [
                {"name": "small-g", "gpus_per_node": 8, "gpu_type": "mi250x"},
                {"name": "small", "default": True},
            ],
        },
        "ssh": {"host": "lumi.example.org"},
    }
)
SITES = [
    local_site("site-a", "cuni"),
    local_site("site-b", "csc", shared_with=["cuni"], local={"slots": 2, "gpus": 1}),
    local_site("private", "csc", shared_with=[]),
    SLURM,
]


def spec(site: object, **stage: object) -> RunSpec:
    return RunSpec.model_validate(
        {"name": "r", "stages": [{"name": "s", "site": site, "command": ["true"], **stage}]}
    )


def test_named_site() -> None:
    plan = plan_run(spec("site-b"), SITES, "cuni")["s"]
    assert plan.sites == ("site-b",) and "named in the spec" in plan.explanation


def test_unknown_site_is_bad_input_naming_the_field() -> None:
    with pytest.raises(DocumentError, match=r"run.yaml: stages\[0\].site: unknown site 'nope'"):
        plan_run(spec("nope"), SITES, "cuni", source="run.yaml")


def test_site_not_shared_is_refused() -> None:
    with pytest.raises(AccessDenied, match=r"'private' .* not shared with partner 'cuni'"):
        plan_run(spec("private"), SITES, "cuni")
    assert plan_run(spec("private"), SITES, "csc")["s"].sites == ("private",)


def test_require_gpus_picks_a_fitting_partition() -> None:
    plan = plan_run(spec({"require": {"min_gpus": 4, "gpu_type": "mi250x"}}), SITES, "cuni")["s"]
    assert plan.sites == ("lumi",) and plan.partitions["lumi"] == "small-g"
    assert "not chosen" in plan.explanation and "site-b" in plan.explanation


def test_require_labels() -> None:
    plan = plan_run(spec({"require": {"labels": {"country": "FI"}}}), SITES, "cuni")["s"]
    assert plan.sites == ("lumi",) and plan.partitions["lumi"] == "small"  # the default


def test_nothing_fits() -> None:
    with pytest.raises(DocumentError, match=r"no site can run stage 's'.*16 GPU"):
        plan_run(spec({"require": {"min_gpus": 16}}), SITES, "cuni")


def test_array_is_spread_over_every_fitting_site() -> None:
    values = [f"v{i}" for i in range(5)]
    plan = plan_run(spec({"any_of": ["site-a", "site-b"]}, array={"x": values}), SITES, "cuni")["s"]
    assert set(plan.sites) == {"site-a", "site-b"}
    spread_values = [v for share in plan.shares.values() for _, v in share]
    assert sorted(spread_values) == values


def test_shorter_queue_wins() -> None:
    probes = {
        "site-a": ProbeRecord(
            site="site-a", checked_at=now(), reachable=True, ok=True, queue_depth=50
        )
    }
    plan = plan_run(spec({"any_of": ["site-a", "site-b"]}), SITES, "cuni", probes)["s"]
    assert plan.sites == ("site-b",)


def test_spread_is_contiguous_and_even() -> None:
    shares = spread(["a", "b", "c", "d", "e"], ["x", "y"])
    assert shares == {"x": ((0, "a"), (1, "b"), (2, "c")), "y": ((3, "d"), (4, "e"))}


def test_more_remaining_allocation_wins() -> None:
    rich = local_site(
        "rich",
        "csc",
        local={"slots": 1, "gpus": 1},
        allocation={"gpu_hours": 100, "start": "2026-01-01", "end": "2026-12-31"},
    )
    poor = local_site(
        "poor",
        "csc",
        local={"slots": 1, "gpus": 1},
        allocation={"gpu_hours": 1000, "start": "2026-01-01", "end": "2026-12-31"},
    )
    s = spec({"require": {"min_gpus": 1}})
    assert plan_run(s, [rich, poor], "csc")["s"].sites == ("poor",)  # granted more
    plan = plan_run(s, [rich, poor], "csc", remaining={"rich": 90, "poor": 5})["s"]
    assert plan.sites == ("rich",) and "90 GPU-h left" in plan.explanation


# -- stages of a run launched earlier: sites removed or unshared since ---------------
def test_placement_refusal_names_the_site_and_the_reason() -> None:
    registered = {s.name: s for s in SITES}
    assert placement_refusal("site-b", "cuni", registered) is None
    assert placement_refusal("gone", "cuni", registered) == (
        "site 'gone' was removed from the registry"
    )
    assert placement_refusal("private", "cuni", registered) == (
        "site 'private' (partner 'csc') is no longer shared with partner 'cuni'"
    )


def test_a_launched_stage_on_a_removed_site_is_refused_not_raised() -> None:
    registered = {s.name: s for s in SITES if s.name != "site-b"}
    plan = plan_launched_stage(spec("site-b").stage("s"), registered, "cuni", {})
    assert plan.sites == () and plan.refusal == "site 'site-b' was removed from the registry"


def test_a_launched_stage_on_an_unshared_site_is_refused() -> None:
    registered = {s.name: s for s in SITES}
    plan = plan_launched_stage(spec("private").stage("s"), registered, "cuni", {})
    assert plan.sites == () and "no longer shared with partner 'cuni'" in (plan.refusal or "")


def test_any_of_keeps_the_sites_still_usable() -> None:
    registered = {s.name: s for s in SITES if s.name != "site-b"}
    plan = plan_launched_stage(
        spec({"any_of": ["site-b", "site-a"]}).stage("s"), registered, "cuni", {}
    )
    assert plan.sites == ("site-a",) and plan.refusal is None
    assert "not usable: site 'site-b' was removed from the registry" in plan.explanation


def test_require_plans_among_the_sites_left_or_refuses_with_why() -> None:
    registered = {s.name: s for s in SITES if s.name != "lumi"}
    stage = spec({"require": {"gpu_type": "mi250x"}}).stage("s")
    plan = plan_launched_stage(stage, registered, "cuni", {})
    assert plan.sites == () and "no site can run stage 's'" in (plan.refusal or "")
    assert plan_launched_stage(stage, {"lumi": SLURM}, "cuni", {}).sites == ("lumi",)
