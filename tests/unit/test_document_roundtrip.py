"""Every document the CLI accepts is stored in a form that validates again, bit for bit.

A property test over Partner, Site, RunSpec and Milestone: documents are generated from
the models' own fields (nested models, unions, literals, lists, dicts, the bounds of
`Field(...)`), with raw inputs the way people write them for the project's value types
(durations, SLURM time limits, memory). Whatever validates is dumped the way the store
dumps it (`model_dump(mode="json")` into a JSON column), validated again and compared.
"""

from __future__ import annotations

import json
import types
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from registry.common import parse_duration, parse_memory, parse_walltime
from registry.milestone import Milestone
from registry.partner import Partner
from registry.runspec import RunSpec, SiteRequirement, Stage
from registry.site import Site

NUMBER_TEXT = st.one_of(
    st.integers(0, 10**20).map(str),
    st.decimals(0, 10**9, places=6, allow_nan=False, allow_infinity=False).map(str),
)
# Raw inputs for the value types, including the ones that once broke the store
# (0.00001 s was stored as '1e-05s', 10**17 s as '1e+17s').
RAW_VALUES: dict[Any, st.SearchStrategy[Any]] = {
    parse_duration: st.one_of(
        st.floats(0, 1e18),
        st.integers(0, 10**18),
        st.sampled_from([0.00001, 10**17, 0.2, 30, 86400.5]),
        st.tuples(NUMBER_TEXT, st.sampled_from(["", "ms", "s", "m", "min", "h", "d"])).map("".join),
    ),
    parse_walltime: st.one_of(
        st.integers(-5, 10**9),
        st.builds(
            "{}-{:02d}:{:02d}:{:02d}".format,
            st.integers(0, 10**4),
            st.integers(0, 30),
            st.integers(0, 70),
            st.integers(0, 70),
        ),
        st.builds("{:02d}:{:02d}".format, st.integers(0, 10**6), st.integers(0, 70)),
    ),
    parse_memory: st.tuples(
        NUMBER_TEXT, st.sampled_from(["", "K", "M", "G", "T", "P", "GB", "GiB"])
    ).map("".join),
}
IDENTIFIERS = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
SMALL_TEXT = st.text(max_size=12)
# Fields whose random values would almost never validate: draw from a small pool so
# that multi-stage specs (needs, placeholders) are exercised, not filtered away.
ARGUMENTS = st.one_of(
    st.text(alphabet=st.characters(exclude_characters="{}"), max_size=8),
    st.sampled_from(["{run_id}", "{stage}", "{{literal}}", "{params.seed}"]),
)
FIELD_OVERRIDES: dict[tuple[type[BaseModel], str], st.SearchStrategy[Any]] = {
    (Stage, "name"): st.sampled_from(["prep", "train", "eval"]),
    (Stage, "site"): st.one_of(
        IDENTIFIERS,
        st.lists(IDENTIFIERS, min_size=1, max_size=2).map(lambda names: {"any_of": names}),
        st.deferred(lambda: raw_documents(SiteRequirement)).map(lambda r: {"require": r}),
    ),
    (Stage, "command"): st.lists(ARGUMENTS, min_size=1, max_size=3),
    (RunSpec, "params"): st.dictionaries(
        st.sampled_from(["seed", "lr"]), st.one_of(st.integers(), st.floats(), SMALL_TEXT)
    ),
    (Stage, "needs"): st.lists(st.sampled_from(["prep", "train", "eval"]), max_size=2),
    (Site, "shared_with"): st.lists(st.one_of(st.just("*"), IDENTIFIERS), max_size=3),
    (Milestone, "partners"): st.lists(st.one_of(st.just("*"), IDENTIFIERS), max_size=3),
    (Partner, "country"): st.one_of(st.sampled_from(["CZ", "FI"]), SMALL_TEXT, st.none()),
}


def _flat_metadata(metadata: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in metadata:
        flat.extend(_flat_metadata(list(item.metadata)) if isinstance(item, FieldInfo) else [item])
    return flat


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    """ge/gt/le/lt/min_length/max_length of annotated_types constraints (Field(...))."""
    names = ("ge", "gt", "le", "lt", "min_length", "max_length")
    return {name: getattr(item, name) for item in metadata for name in names if hasattr(item, name)}


def _constrained(base: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    for item in metadata:
        raw = RAW_VALUES.get(getattr(item, "func", None))
        if raw is not None:
            return raw
    if any(getattr(getattr(m, "func", None), "__name__", "") == "_identifier" for m in metadata):
        return IDENTIFIERS
    bounds = _bounds(metadata)
    if base is int:
        low = bounds.get("ge", bounds.get("gt", -(2**70)))
        high = bounds.get("le", bounds.get("lt", 2**70))
        # Just inside and just outside the bounds, where stored forms go wrong.
        return st.one_of(st.integers(low - 1, high + 1), st.sampled_from([low, high]))
    shortest = bounds.get("min_length", 0)
    if base is str:
        return st.text(min_size=shortest, max_size=max(shortest, 12))
    if get_origin(base) is list:
        return st.lists(strategy_for(get_args(base)[0]), min_size=shortest, max_size=3)
    return strategy_for(base)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Raw (YAML-like) values for a field annotation."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        return _constrained(base, _flat_metadata(metadata))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return raw_documents(annotation)
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin in (Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in get_args(annotation)])
    if origin is list:
        return st.lists(strategy_for(get_args(annotation)[0]), max_size=3)
    if origin is dict:
        key, value = get_args(annotation)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: SMALL_TEXT,
        int: st.integers(),
        float: st.floats(),
        bool: st.booleans(),
        date: st.dates(),
        type(None): st.none(),
    }
    return simple[annotation]


def _field_strategy(model: type[BaseModel], name: str, field: FieldInfo) -> Any:
    override = FIELD_OVERRIDES.get((model, name))
    if override is not None:
        return override
    annotation = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]  # type: ignore[valid-type]
    return st.deferred(lambda: strategy_for(annotation))


def raw_documents(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Mappings of `model`'s fields that validate as `model` (filtered per level, so a
    nested model that fails does not throw its whole parent away)."""
    required, optional = {}, {}
    for name, field in model.model_fields.items():
        target = required if field.is_required() else optional
        target[name] = _field_strategy(model, name, field)
    raw = st.fixed_dictionaries(required, optional=optional)
    if model is Stage:
        raw = raw.map(_command_or_script)
    return raw.filter(lambda data: _validates(model, data))


def _command_or_script(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage has exactly one of the two; random drafts have both or neither 3/4 of
    the time, which would leave too few whole specs."""
    if "command" in stage and "script" in stage:
        del stage["script"]
    elif "command" not in stage and "script" not in stage:
        stage["command"] = ["true"]
    return stage


def _validates(model: type[BaseModel], data: Any) -> bool:
    try:
        model.model_validate(data)
    except (ValidationError, ValueError):
        return False
    return True


def stored_form(document: BaseModel) -> Any:
    """What the store keeps: the JSON dump, through a JSON column and back."""
    return json.loads(json.dumps(document.model_dump(mode="json"), allow_nan=False))


MODELS = [Partner, Site, RunSpec, Milestone]
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_whatever_validates_is_stored_in_a_form_that_validates_again(
    model: type[BaseModel],
) -> None:
    @PROPERTY
    @given(data=raw_documents(model))
    def round_trip(data: Any) -> None:
        document = model.model_validate(data)
        stored = stored_form(document)
        again = model.model_validate(stored)
        assert again == document
        assert stored_form(again) == stored

    round_trip()


@pytest.mark.parametrize(
    "policy",
    [{"min_poll_interval": 0.00001}, {"min_poll_interval": 10**17}, {"max_queued_jobs": 10**30}],
)
def test_out_of_range_values_are_refused_at_the_door(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Site.model_validate({"name": "x", "partner": "p", "scheduler": "local", "policy": policy})


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"time": "100000-00:00:00"}, "time"),
        ({"time": 10**12}, "time"),
        ({"mem": "2P"}, "mem"),
        ({"mem": "9" * 400}, "mem"),
        ({"nodes": 10**9}, "nodes"),
    ],
)
def test_resources_beyond_any_machine_are_refused(resources: dict[str, Any], field: str) -> None:
    stage = {"name": "s", "site": "a", "command": ["true"], "resources": resources}
    with pytest.raises(ValidationError) as caught:
        RunSpec.model_validate({"name": "r", "stages": [stage]})
    assert caught.value.errors()[0]["loc"][-1] == field
