"""Where the programme stands against its milestones.

A milestone's criteria (registry.milestone) are checked against evidence:

- `stage_completed` against the store: some run of the named run spec has the stage
  COMPLETED. Progress is the share of the stage and everything it needs that the most
  advanced run of that spec has completed.
- `metric` against MLflow: the latest completed parent run of the experiment that has a
  result for the key, read as `<key>/<value>` on the parent (arrays) or from its child
  runs tagged `hpcfleet.array_value`. Progress is the share of `all_of` values that
  pass.

The evaluation is pure (`evaluate_milestone` over records and `MetricEvidence`);
`load_evidence` is the thin loader that fetches exactly that evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from registry.milestone import Criterion, MetricCriterion, Milestone, StageCompletedCriterion
from registry.records import RunRecord, StageRecord
from registry.runspec import RunSpec
from registry.states import RunState

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from registry.store import Store

AT_RISK_DAYS = 30  # an unmet milestone due within this many days is at risk
MAX_PARENT_CANDIDATES = 20  # newest completed parent runs looked at per metric criterion
MAX_STAGE_CANDIDATES = 50  # newest runs of a spec looked at per stage criterion
PARENT_FILTER = "tags.`hpcfleet.run_name` LIKE '%' AND tags.`hpcfleet.state` = 'COMPLETED'"

MilestoneState = Literal["met", "on track", "at risk", "overdue"]


@dataclass(frozen=True)
class RunStages:
    """One run of a spec with its stages, as a stage criterion needs it."""

    run: RunRecord
    stages: Sequence[StageRecord]


@dataclass(frozen=True)
class MetricEvidence:
    """The results a metric criterion is judged on: one parent run's values.

    `values` maps an array value (e.g. a language) to its result; a criterion without
    `over` reads its single value under the key "".
    """

    run_id: str  # the hpcfleet run id
    run_name: str
    values: Mapping[str, float]


@dataclass(frozen=True)
class Evidence:
    """Everything the criteria of some milestones are evaluated against."""

    runs_by_spec: Mapping[str, Sequence[RunStages]] = field(default_factory=dict)
    # keyed by `metric_key(criterion)`: the criterion models hold lists, so are unhashable
    metrics: Mapping[str, MetricEvidence | None] = field(default_factory=dict)


@dataclass(frozen=True)
class CriterionStatus:
    kind: Literal["stage_completed", "metric"]
    description: str
    met: bool
    progress: float  # 0..1
    detail: str


@dataclass(frozen=True)
class MilestoneStatus:
    id: str
    title: str
    due: date
    days_left: int
    criteria: list[CriterionStatus]
    progress: float  # mean of the criteria's progress
    met: bool
    state: MilestoneState

    @property
    def at_risk(self) -> bool:
        return self.state in ("at risk", "overdue")


# -- pure evaluation ------------------------------------------------------------------


def evaluate_milestone(
    milestone: Milestone, evidence: Evidence, today: date, at_risk_days: int = AT_RISK_DAYS
) -> MilestoneStatus:
    """Judge every criterion; the milestone is at risk when unmet and due soon or past."""
    criteria = [evaluate_criterion(c, evidence) for c in milestone.criteria]
    met = all(c.met for c in criteria)
    progress = sum(c.progress for c in criteria) / len(criteria)
    days_left = (milestone.due - today).days
    state: MilestoneState
    if met:
        state = "met"
    elif days_left < 0:
        state = "overdue"
    elif days_left <= at_risk_days:
        state = "at risk"
    else:
        state = "on track"
    return MilestoneStatus(
        id=milestone.id,
        title=milestone.title,
        due=milestone.due,
        days_left=days_left,
        criteria=criteria,
        progress=progress,
        met=met,
        state=state,
    )


def evaluate_criterion(criterion: Criterion, evidence: Evidence) -> CriterionStatus:
    if criterion.stage_completed is not None:
        wanted = criterion.stage_completed
        return evaluate_stage_completed(wanted, evidence.runs_by_spec.get(wanted.run, ()))
    assert criterion.metric is not None  # a Criterion holds exactly one of the two
    return evaluate_metric(criterion.metric, evidence.metrics.get(metric_key(criterion.metric)))


def metric_key(criterion: MetricCriterion) -> str:
    """What identifies a metric criterion's evidence (same criterion, same evidence)."""
    return criterion.model_dump_json()


def evaluate_stage_completed(
    criterion: StageCompletedCriterion, runs: Sequence[RunStages]
) -> CriterionStatus:
    description = f"stage {criterion.stage} of {criterion.run} completed"
    if not runs:
        return CriterionStatus(
            "stage_completed", description, False, 0.0, f"no run of {criterion.run} yet"
        )
    best: tuple[float, RunStages] | None = None
    for item in runs:
        chain = stage_chain(item.run.spec, criterion.stage)
        if not chain:
            continue
        done = {s.name for s in item.stages if s.state is RunState.COMPLETED}
        share = len(chain & done) / len(chain)
        if criterion.stage in done:
            share = 1.0
        if best is None or share > best[0]:
            best = (share, item)
    if best is None:
        return CriterionStatus(
            "stage_completed",
            description,
            False,
            0.0,
            f"run spec {criterion.run} has no stage {criterion.stage}",
        )
    share, item = best
    run = item.run
    if share >= 1.0:
        return CriterionStatus(
            "stage_completed", description, True, 1.0, f"completed in run {run.run_id}"
        )
    state = next((s.state.value for s in item.stages if s.name == criterion.stage), "PENDING")
    return CriterionStatus(
        "stage_completed",
        description,
        False,
        share,
        f"furthest run {run.run_id} ({run.state.value}): {criterion.stage} is {state}",
    )


def stage_chain(spec: RunSpec, stage: str) -> set[str]:
    """The stage and every stage it needs, directly or transitively (empty if unknown)."""
    names = {s.name for s in spec.stages}
    if stage not in names:
        return set()
    chain: set[str] = set()
    frontier = [stage]
    while frontier:
        current = frontier.pop()
        if current in chain:
            continue
        chain.add(current)
        frontier.extend(spec.stage(current).needs)
    return chain


def describe_metric(criterion: MetricCriterion) -> str:
    bounds = []
    if criterion.min is not None:
        bounds.append(f"≥ {criterion.min:g}")
    if criterion.max is not None:
        bounds.append(f"≤ {criterion.max:g}")
    text = f"{criterion.key} {' and '.join(bounds)}"
    if criterion.all_of:
        text += f" for all {len(criterion.all_of)} {criterion.over} values"
    elif criterion.over:
        text += f" for every {criterion.over}"
    return f"{text} (experiment {criterion.experiment})"


def passes(criterion: MetricCriterion, value: float) -> bool:
    if criterion.min is not None and value < criterion.min:
        return False
    return not (criterion.max is not None and value > criterion.max)


def evaluate_metric(criterion: MetricCriterion, evidence: MetricEvidence | None) -> CriterionStatus:
    description = describe_metric(criterion)
    if evidence is None or not evidence.values:
        return CriterionStatus(
            "metric",
            description,
            False,
            0.0,
            f"no completed run of {criterion.experiment} with {criterion.key}",
        )
    source = f"run {evidence.run_name} ({evidence.run_id})"
    if not criterion.over:
        value = evidence.values.get("")
        if value is None:
            return CriterionStatus("metric", description, False, 0.0, f"{source}: no value")
        ok = passes(criterion, value)
        return CriterionStatus(
            "metric",
            description,
            ok,
            1.0 if ok else 0.0,
            f"{source}: {criterion.key} = {value:.4g}",
        )
    wanted = list(criterion.all_of) or sorted(evidence.values)
    missing = [v for v in wanted if v not in evidence.values]
    values = evidence.values
    failing = [v for v in wanted if v in values and not passes(criterion, values[v])]
    passing = len(wanted) - len(missing) - len(failing)
    parts = [f"{source}: {passing}/{len(wanted)} pass"]
    if failing:
        parts.append("outside the bounds: " + _listing([f"{v} ({values[v]:.3g})" for v in failing]))
    if missing:
        parts.append("no result: " + _listing(missing))
    return CriterionStatus(
        "metric", description, passing == len(wanted), passing / len(wanted), "; ".join(parts)
    )


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def values_from_parent(
    metrics: Mapping[str, float], criterion: MetricCriterion
) -> dict[str, float]:
    """A parent run's results for the criterion: `<key>/<value>` metrics, or `key`."""
    if not criterion.over:
        return {"": float(metrics[criterion.key])} if criterion.key in metrics else {}
    prefix = f"{criterion.key}/"
    return {
        name[len(prefix) :]: float(value)
        for name, value in metrics.items()
        if name.startswith(prefix) and len(name) > len(prefix)
    }


def values_from_children(children: Iterable[Any], criterion: MetricCriterion) -> dict[str, float]:
    """Results from completed child runs (newest attempt wins for each array value)."""
    found: dict[str, tuple[int, float]] = {}
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        if tags.get("hpcfleet.state") != "COMPLETED" or criterion.key not in metrics:
            continue
        value_name = tags.get("hpcfleet.array_value", "") if criterion.over else ""
        if criterion.over and not value_name:
            continue
        started = int(child.info.start_time or 0)
        if value_name not in found or started >= found[value_name][0]:
            found[value_name] = (started, float(metrics[criterion.key]))
    return {name: value for name, (_, value) in found.items()}


# -- the thin loader -----------------------------------------------------------------


def load_evidence(
    milestones: Iterable[Milestone],
    store: Store,
    client: MlflowClient | None,
    runs: Sequence[tuple[str, str]] | None = None,
) -> Evidence:
    """Fetch what the milestones' criteria need from the store and MLflow.

    `runs` lists (run id, run spec name) oldest first, when the caller already has it
    (else it comes from `store.list_runs()`). Without an MLflow client, metric criteria
    get no evidence.
    """
    criteria = [c for m in milestones for c in m.criteria]
    spec_names = {c.stage_completed.run for c in criteria if c.stage_completed is not None}
    if runs is None:
        runs = [(r.run_id, r.name) for r in store.list_runs()]
    runs_by_spec: dict[str, list[RunStages]] = {}
    for name in spec_names:
        newest = [run_id for run_id, spec in reversed(runs) if spec == name]
        runs_by_spec[name] = [
            RunStages(store.get_run(run_id), store.stages(run_id))
            for run_id in newest[:MAX_STAGE_CANDIDATES]
        ]
    metrics: dict[str, MetricEvidence | None] = {}
    for criterion in criteria:
        if criterion.metric is not None and metric_key(criterion.metric) not in metrics:
            metrics[metric_key(criterion.metric)] = (
                load_metric_evidence(client, criterion.metric) if client is not None else None
            )
    return Evidence(runs_by_spec=runs_by_spec, metrics=metrics)


def load_metric_evidence(client: MlflowClient, criterion: MetricCriterion) -> MetricEvidence | None:
    """The newest completed parent run of the experiment that has results for the key."""
    experiment = client.get_experiment_by_name(criterion.experiment)
    if experiment is None:
        return None
    experiment_id = str(experiment.experiment_id)
    parents = client.search_runs(
        [experiment_id],
        filter_string=PARENT_FILTER,
        order_by=["attributes.start_time DESC"],
        max_results=MAX_PARENT_CANDIDATES,
    )
    for parent in parents:
        tags = parent.data.tags
        run_id = tags.get("hpcfleet.run_id", "")
        values = values_from_parent(parent.data.metrics, criterion)
        if not values and run_id:
            children = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`hpcfleet.run_id` = '{_quoted(run_id)}' "
                "AND tags.`mlflow.parentRunId` LIKE '%'",
                max_results=5000,
            )
            values = values_from_children(children, criterion)
        if values:
            return MetricEvidence(run_id, tags.get("hpcfleet.run_name", ""), values)
    return None


def milestone_statuses(
    store: Store,
    client: MlflowClient | None,
    today: date,
    runs: Sequence[tuple[str, str]] | None = None,
) -> list[MilestoneStatus]:
    """Every stored milestone, evaluated now, soonest due first."""
    milestones = [record.milestone for record in store.list_milestones()]
    evidence = load_evidence(milestones, store, client, runs)
    statuses = [evaluate_milestone(m, evidence, today) for m in milestones]
    return sorted(statuses, key=lambda s: (s.due, s.id))


def _quoted(value: str) -> str:
    # MLflow's filter grammar has no escapes; run ids are hex, but be strict anyway.
    return value.replace("'", "")
