"""The state tables in `registry.states` say what the code does with each state."""

from __future__ import annotations

from enum import StrEnum

import pytest

from flows.retry import cancelled_tasks, failure_reason, next_tasks
from registry.records import JobRecord
from registry.runspec import Stage
from registry.states import JobState, RunState


def table(kind: type[StrEnum]) -> dict[str, list[str]]:
    """The rows of the simple table in `kind`'s docstring: state -> its short columns."""
    lines = (kind.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip().startswith("=====")]
    assert len(rules) == 3, f"{kind.__name__}: expected one table with a header"
    rule = lines[rules[0]]
    indent = len(rule) - len(rule.lstrip())
    rows: dict[str, list[str]] = {}
    for line in lines[rules[1] + 1 : rules[2]]:
        if line[indent : indent + 1].strip():  # a row; its downstream text may go on below
            name, *rest = line.split()
            assert name not in rows, f"{name} listed twice"
            rows[name] = rest[: len(rule.split()) - 2]
    return rows


def test_every_state_is_in_its_table() -> None:
    assert sorted(table(JobState)) == sorted(JobState.__members__)
    assert sorted(table(RunState)) == sorted(RunState.__members__)


@pytest.mark.parametrize("kind", [JobState, RunState])
def test_final_column_matches_is_final(kind: type[JobState] | type[RunState]) -> None:
    for name, columns in table(kind).items():
        assert columns[0] == ("yes" if kind[name].is_final else "no"), name


def test_policy_column_matches_the_state_properties() -> None:
    for name, (_, policy) in table(JobState).items():
        state = JobState[name]
        assert state.is_success == (policy == "success"), name
        assert state.is_retryable_failure == (policy == "retry"), name
        assert state.is_resumable_interruption == (policy == "resume"), name
        assert (policy == "-") == (not state.is_final), name


def one_job(state: JobState) -> list[JobRecord]:
    return [
        JobRecord(
            id=1,
            run_id="r1",
            stage="s",
            attempt=1,
            site="site-a",
            job_name="hpcfleet-r1-s-1",
            scheduler_id="1",
            array_index=None,
            array_value=None,
            state=state,
        )
    ]


@pytest.mark.parametrize("state", [s for s in JobState if s.is_final])
def test_policy_column_is_what_the_retry_policy_does(state: JobState) -> None:
    _, policy = table(JobState)[state.name]
    history = one_job(state)
    base = {"name": "s", "site": "site-a", "command": ["true"], "retries": 1}
    resumable = Stage.model_validate({**base, "resumable": True})
    not_resumable = Stage.model_validate(base)
    assert bool(next_tasks(resumable, history)) == (policy in ("retry", "resume"))
    assert bool(next_tasks(not_resumable, history)) == (policy == "retry")
    assert (failure_reason(history) is None) == (policy == "success")
    assert bool(cancelled_tasks(history)) == (policy == "cancel")
