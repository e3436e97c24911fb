"""Milestone criteria: judged from run records and MLflow results, with progress and risk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.milestones import (
    Evidence,
    MetricEvidence,
    RunStages,
    evaluate_metric,
    evaluate_milestone,
    evaluate_stage_completed,
    load_evidence,
    metric_key,
    milestone_statuses,
    values_from_children,
    values_from_parent,
)
from registry.milestone import MetricCriterion, Milestone, StageCompletedCriterion
from registry.partner import Partner
from registry.records import RunRecord, StageRecord
from registry.runspec import RunSpec
from registry.states import RunState
from registry.store import Store

TODAY = date(2026, 6, 1)
LANGUAGES = ["bg", "cs", "da"]


def spec(name: str = "tiny-llm-v1") -> RunSpec:
    return RunSpec.model_validate({"name": name, "experiment": "tiny-llm", "stages": [
        {"name": "prepare", "site": "a", "command": ["true"]},
        {"name": "train", "site": "a", "command": ["true"], "needs": ["prepare"]},
        {"name": "evaluate", "site": "a", "command": ["true"], "needs": ["train"]},
    ]})


def run_stages(run_id: str, states: dict[str, RunState], name: str = "tiny-llm-v1") -> RunStages:
    run = RunRecord(run_id=run_id, name=name, partner="cuni", experiment="tiny-llm",
                    state=RunState.RUNNING, created=datetime(2026, 5, 1, tzinfo=UTC),
                    spec=spec(name))
    stages = [StageRecord(run_id=run_id, name=n, state=s) for n, s in states.items()]
    return RunStages(run, stages)


def accuracy(**bounds: Any) -> MetricCriterion:
    return MetricCriterion.model_validate(
        {"experiment": "tiny-llm", "key": "accuracy", "over": "language",
         "all_of": LANGUAGES, **(bounds or {"min": 0.6})})


DONE, RUNNING, PENDING = RunState.COMPLETED, RunState.RUNNING, RunState.PENDING


# -- stage_completed -------------------------------------------------------------------


def test_a_completed_stage_meets_the_criterion() -> None:
    wanted = StageCompletedCriterion(run="tiny-llm-v1", stage="train")
    status = evaluate_stage_completed(wanted, [
        run_stages("old", {"prepare": DONE, "train": DONE, "evaluate": DONE}),
    ])
    assert status.met and status.progress == 1.0
    assert status.detail == "completed in run old"


def test_progress_counts_the_stages_the_target_needs() -> None:
    wanted = StageCompletedCriterion(run="tiny-llm-v1", stage="train")
    status = evaluate_stage_completed(wanted, [
        run_stages("a", {"prepare": PENDING, "train": PENDING, "evaluate": PENDING}),
        run_stages("b", {"prepare": DONE, "train": RUNNING, "evaluate": PENDING}),
    ])
    assert not status.met
    assert status.progress == 0.5  # prepare of {prepare, train} is done in run b
    assert "run b" in status.detail and "train is RUNNING" in status.detail


def test_no_run_of_the_spec_means_no_progress() -> None:
    status = evaluate_stage_completed(StageCompletedCriterion(run="data-v2", stage="dedup"), [])
    assert (status.met, status.progress, status.detail) == (False, 0.0, "no run of data-v2 yet")


def test_a_stage_the_spec_does_not_have_is_named() -> None:
    wanted = StageCompletedCriterion(run="tiny-llm-v1", stage="dedup")
    status = evaluate_stage_completed(wanted, [run_stages("a", {"prepare": DONE})])
    assert not status.met and "has no stage dedup" in status.detail


# -- metric ----------------------------------------------------------------------------


def evidence(values: dict[str, float]) -> MetricEvidence:
    return MetricEvidence(run_id="abc123", run_name="tiny-llm-v1", values=values)


def test_every_language_above_the_bound_meets_the_criterion() -> None:
    status = evaluate_metric(accuracy(), evidence({"bg": 0.7, "cs": 0.61, "da": 0.6, "fi": 0.1}))
    assert status.met and status.progress == 1.0
    assert "3/3 pass" in status.detail


def test_languages_below_the_bound_or_missing_are_named() -> None:
    status = evaluate_metric(accuracy(), evidence({"bg": 0.7, "cs": 0.4}))
    assert not status.met
    assert status.progress == pytest.approx(1 / 3)
    assert "outside the bounds: cs (0.4)" in status.detail
    assert "no result: da" in status.detail


def test_a_max_bound_judges_lower_is_better_metrics() -> None:
    criterion = accuracy(max=2.0, key="nll")
    status = evaluate_metric(criterion, evidence({"bg": 1.5, "cs": 2.5, "da": 1.0}))
    assert not status.met and "cs (2.5)" in status.detail
    assert "≤ 2" in status.description


def test_a_scalar_metric_reads_its_single_value() -> None:
    criterion = MetricCriterion(experiment="tiny-llm", key="val_loss", max=2.0)
    assert evaluate_metric(criterion, evidence({"": 1.9})).met
    failed = evaluate_metric(criterion, evidence({"": 2.1}))
    assert not failed.met and failed.progress == 0.0 and "val_loss = 2.1" in failed.detail


def test_no_completed_run_means_no_progress() -> None:
    status = evaluate_metric(accuracy(), None)
    assert not status.met and status.progress == 0.0
    assert "no completed run of tiny-llm" in status.detail


def test_parent_metrics_are_read_as_key_slash_value() -> None:
    metrics = {"accuracy/bg": 0.7, "accuracy/cs": 0.5, "nll/bg": 3.0, "gpu_hours": 12.0}
    assert values_from_parent(metrics, accuracy()) == {"bg": 0.7, "cs": 0.5}
    scalar = MetricCriterion(experiment="tiny-llm", key="gpu_hours", max=100)
    assert values_from_parent(metrics, scalar) == {"": 12.0}


@dataclass
class FakeRun:
    """The parts of an MLflow Run the loader reads."""

    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int = 0
    data: Any = field(init=False)
    info: Any = field(init=False)

    def __post_init__(self) -> None:
        self.data = self
        self.info = self


def test_children_give_values_newest_completed_attempt_first() -> None:
    children = [
        FakeRun({"hpcfleet.state": "COMPLETED", "hpcfleet.array_value": "bg"},
                {"accuracy": 0.5}, start_time=1),
        FakeRun({"hpcfleet.state": "COMPLETED", "hpcfleet.array_value": "bg"},
                {"accuracy": 0.8}, start_time=2),
        FakeRun({"hpcfleet.state": "FAILED", "hpcfleet.array_value": "cs"},
                {"accuracy": 0.9}, start_time=3),
        FakeRun({"hpcfleet.state": "COMPLETED"}, {"accuracy": 0.99}, start_time=4),
    ]
    assert values_from_children(children, accuracy()) == {"bg": 0.8}


# -- the milestone -----------------------------------------------------------------------


def milestone(due: date) -> Milestone:
    return Milestone.model_validate({
        "id": "m1", "title": "First model release", "due": due,
        "criteria": [{"stage_completed": {"run": "tiny-llm-v1", "stage": "train"}},
                     {"metric": accuracy().model_dump()}],
    })


def half_done() -> Evidence:
    return Evidence(
        runs_by_spec={"tiny-llm-v1": [run_stages("a", {"prepare": DONE, "train": DONE})]},
        metrics={metric_key(accuracy()): evidence({"bg": 0.7})},
    )


@pytest.mark.parametrize(("days", "state"), [
    (90, "on track"), (30, "at risk"), (0, "at risk"), (-1, "overdue"),
])
def test_an_unmet_milestone_is_at_risk_when_due_soon_or_past(days: int, state: str) -> None:
    status = evaluate_milestone(milestone(TODAY + timedelta(days=days)), half_done(), TODAY)
    assert status.state == state
    assert status.at_risk == (state != "on track")
    assert status.days_left == days
    assert status.progress == pytest.approx((1.0 + 1 / 3) / 2)


def test_a_met_milestone_is_never_at_risk_even_when_past_due() -> None:
    done = Evidence(
        runs_by_spec={"tiny-llm-v1": [run_stages("a", {"prepare": DONE, "train": DONE})]},
        metrics={metric_key(accuracy()): evidence({"bg": 0.7, "cs": 0.7, "da": 0.7})},
    )
    status = evaluate_milestone(milestone(TODAY - timedelta(days=3)), done, TODAY)
    assert status.met and status.state == "met" and not status.at_risk
    assert status.progress == 1.0


# -- the loader --------------------------------------------------------------------------


class FakeMlflow:
    """search_runs over parents/children by the filters the loader uses."""

    def __init__(self, parents: list[FakeRun], children: list[FakeRun]) -> None:
        self.parents, self.children = parents, children
        self.searches: list[str] = []

    def get_experiment_by_name(self, name: str) -> Any:
        return type("Experiment", (), {"experiment_id": "1"})() if name == "tiny-llm" else None

    def search_runs(self, ids: list[str], filter_string: str = "", **kwargs: Any) -> list[Any]:
        self.searches.append(filter_string)
        if "hpcfleet.run_name" in filter_string:
            done = [p for p in self.parents if p.tags.get("hpcfleet.state") == "COMPLETED"]
            return sorted(done, key=lambda p: -p.start_time)
        return [c for c in self.children if c.tags["hpcfleet.run_id"] in filter_string]


def parent(run_id: str, start: int, metrics: dict[str, float], state: str = "COMPLETED") -> FakeRun:
    return FakeRun({"hpcfleet.run_id": run_id, "hpcfleet.run_name": "tiny-llm-v1",
                    "hpcfleet.state": state}, metrics, start_time=start)


def test_the_newest_completed_parent_with_results_is_the_evidence() -> None:
    client = FakeMlflow([
        parent("old", 1, {"accuracy/bg": 0.5}),
        parent("new", 2, {"accuracy/bg": 0.9}),
        parent("running", 3, {"accuracy/bg": 0.1}, state="RUNNING"),
        parent("train-only", 4, {"gpu_hours": 5.0}),  # completed, but without results...
    ], children=[])
    store = _Store()
    found = load_evidence([milestone(TODAY)], store, client)  # type: ignore[arg-type]
    result = found.metrics[metric_key(accuracy())]
    assert result is not None and result.run_id == "new" and result.values == {"bg": 0.9}


def test_children_are_read_when_the_parent_has_no_array_results() -> None:
    child = FakeRun({"hpcfleet.run_id": "p1", "hpcfleet.state": "COMPLETED",
                     "hpcfleet.array_value": "cs", "mlflow.parentRunId": "x"}, {"accuracy": 0.7})
    client = FakeMlflow([parent("p1", 1, {"gpu_hours": 1.0})], [child])
    found = load_evidence([milestone(TODAY)], _Store(), client)  # type: ignore[arg-type]
    result = found.metrics[metric_key(accuracy())]
    assert result is not None and result.values == {"cs": 0.7}


def test_without_mlflow_metric_criteria_have_no_evidence() -> None:
    found = load_evidence([milestone(TODAY)], _Store(), None)  # type: ignore[arg-type]
    assert found.metrics == {metric_key(accuracy()): None}


class _Store:
    """A store without runs (the metric-loader tests need none)."""

    def list_runs(self) -> list[RunRecord]:
        return []

    def stages(self, run_id: str) -> list[StageRecord]:
        return []


def test_statuses_from_a_real_store_soonest_due_first(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    store.put_partner(Partner(id="cuni", name="Charles University"))
    store.create_run("r1", spec(), "cuni")
    store.update_stage("r1", "prepare", state=RunState.COMPLETED)
    store.update_stage("r1", "train", state=RunState.COMPLETED)
    later = milestone(TODAY + timedelta(days=200))
    sooner = Milestone.model_validate({
        "id": "m0", "title": "Training done", "due": TODAY + timedelta(days=10),
        "criteria": [{"stage_completed": {"run": "tiny-llm-v1", "stage": "train"}}],
    })
    store.put_milestone(later, "cuni")
    store.put_milestone(sooner, "cuni")
    statuses = milestone_statuses(store, None, TODAY)
    assert [s.id for s in statuses] == ["m0", "m1"]
    assert statuses[0].met and statuses[0].state == "met"
    assert statuses[1].criteria[0].met and not statuses[1].criteria[1].met
    assert statuses[1].state == "on track"
    store.close()
