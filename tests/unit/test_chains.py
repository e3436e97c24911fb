"""Same-site chains: which stages are queued with afterok behind their needs, which
needs the engine awaits, and which job ids a chained stage waits for."""

from __future__ import annotations

from flows.chains import afterok_ids, awaited_needs, chainable_stages
from flows.context import StageProgress
from flows.planning import StagePlan
from flows.tasks import PlannedTask, initial_tasks
from registry.runspec import RunSpec

SPEC = RunSpec.model_validate(
    {
        "name": "r",
        "stages": [
            {"name": "prepare", "site": "a", "command": ["true"]},
            {"name": "train", "site": "a", "command": ["true"], "needs": ["prepare"]},
            {"name": "remote", "site": "b", "command": ["true"], "needs": ["prepare"]},
            {"name": "report", "site": "a", "command": ["true"], "needs": ["train", "remote"]},
        ],
    }
)


def plan(stage: str, *sites: str) -> StagePlan:
    return StagePlan(stage, sites, dict.fromkeys(sites), "named in the spec")


PLANS = {
    "prepare": plan("prepare", "a"),
    "train": plan("train", "a"),
    "remote": plan("remote", "b"),
    "report": plan("report", "a"),
}


def test_only_stages_whose_needs_all_run_on_their_one_site_are_chained() -> None:
    assert chainable_stages(SPEC, PLANS) == {"train"}
    spread = {**PLANS, "train": plan("train", "a", "b")}
    assert chainable_stages(SPEC, spread) == set()


def test_the_engine_awaits_every_need_except_for_chained_stages() -> None:
    assert awaited_needs(SPEC, {"train"}) == {
        "prepare": [],
        "train": [],
        "remote": ["prepare"],
        "report": ["train", "remote"],
    }
    assert awaited_needs(SPEC, set())["train"] == ["prepare"]


def test_a_chained_stage_waits_for_the_live_jobs_of_its_needs_by_array_id() -> None:
    chain = {
        "prepare": StageProgress(1, {"a": ["12_0", "12_1", "9"]}),
        "done": StageProgress(1, {"a": ["100"]}, final=True),
    }
    assert afterok_ids(chain) == ("9", "12")
    assert afterok_ids(None) == ()


def test_the_first_attempt_runs_every_array_value_on_its_planned_site() -> None:
    assert initial_tasks(plan("s", "a")) == [PlannedTask("a", None, None)]
    shares = {"a": ((0, "bg"),), "b": ((1, "cs"), (2, "de"))}
    array = StagePlan("s", ("a", "b"), {"a": None, "b": None}, "spread", shares)
    assert initial_tasks(array) == [
        PlannedTask("a", 0, "bg"),
        PlannedTask("b", 1, "cs"),
        PlannedTask("b", 2, "de"),
    ]
