"""Metric keys meet MLflow's own rules (its validator decides here): a job's bad key is
skipped with a reason, an array value MLflow would refuse is escaped, never fatal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

from flows.metrics import MAX_KEY_LENGTH, key_part, key_problem, parent_metric_key, parse_metrics
from registry.errors import DocumentError
from registry.loading import validate_document
from registry.runspec import RunSpec


def mlflow_takes(key: str) -> bool:
    try:
        _validate_metric_name(key)
        _validate_tag_name(key)
    except MlflowException:
        return False
    return len(key) <= MAX_KEY_LENGTH


KEYS = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="ab./ _-:+", max_size=12),
    st.sampled_from(["a/../b", "a//b", "/a", "a/", ".", "..", "acc", "loss avg", "x" * 251]),
)


@settings(max_examples=300, deadline=None)
@given(key=KEYS)
def test_a_key_hpcfleet_accepts_is_one_mlflow_accepts(key: str) -> None:
    if key_problem(key) is None:
        assert mlflow_takes(key)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=300), key=st.sampled_from(["acc", "eval/acc", "a" * 250]))
def test_every_array_value_makes_a_parent_key_mlflow_accepts(value: str, key: str) -> None:
    assert mlflow_takes(parent_metric_key(key, value))


@settings(max_examples=300, deadline=None)
@given(a=st.text(max_size=12), b=st.text(max_size=12))
def test_distinct_values_stay_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert key_part(a) != key_part(b)


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ("fi", "fi"),
        ("en_US", "en_US"),
        ("c++", "c_x2B__x2B_"),
        ("a/b", "a_x2F_b"),
        ("..", "_x2E__x2E_"),
        ("", "_x_"),
        ("_x41_", "_x5F_x41_x5F_"),
    ],
)
def test_ordinary_values_stay_as_they_are_others_are_escaped(value: str, part: str) -> None:
    assert key_part(value) == part


def test_a_jobs_path_traversing_key_is_skipped_with_a_reason() -> None:
    parsed = parse_metrics('{"key": "a/../b", "value": 1}\n{"key": "acc", "value": 0.5}\n')
    assert [p.key for p in parsed.points] == ["acc"]
    assert len(parsed.rejected) == 1 and "line 1: bad key 'a/../b'" in parsed.rejected[0]


def test_param_names_are_checked_at_launch() -> None:
    stage = {"name": "a", "site": "s", "command": ["true"]}
    with pytest.raises(DocumentError, match=r"params: 'a/\.\./b' is not a valid param name"):
        validate_document(
            {"name": "r", "params": {"a/../b": 1}, "stages": [stage]}, RunSpec, source="r.yaml"
        )
