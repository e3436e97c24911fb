"""Reading documents from YAML: one model per file, errors that name file and field.

YAML is read with a strict loader: duplicate keys are errors, and `01:00:00` stays a
string (YAML 1.1 would silently read it as the base-60 number 3600). A document is also
input from another organisation, so the loader refuses what would exhaust the reader
rather than describe an experiment: files over `MAX_DOCUMENT_BYTES`, nesting deeper
than `MAX_DEPTH` (PyYAML composes recursively: 20,000 brackets overflow the stack), and
aliases that expand past `MAX_NODES` nodes ("billion laughs": a few lines that expand to
10^9 values once validated).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from registry.errors import DocumentError
from registry.runspec import FieldError

M = TypeVar("M", bound=BaseModel)

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64  # the deepest real document (a site) nests 5 levels
MAX_NODES = 1_000_000  # values after alias expansion; a 100,000-value array is ~100,001


class _Refused(yaml.YAMLError):
    """A document the loader will not expand (too deep, too large once expanded)."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers, refusing duplicate keys, deep nesting and
    alias bombs."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set(), 1)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _expanded_size(
    node: yaml.Node, sizes: dict[int, tuple[int, int]], open_: set[int], depth: int
) -> tuple[int, int]:
    """(values, levels) of `node` with every alias expanded; memoised per node, so an
    alias bomb costs one visit per distinct node. Refuses cycles, depth and size."""
    known = sizes.get(id(node))
    if known is None:
        if id(node) in open_:
            raise _Refused("an alias refers to the node that contains it", node.start_mark)
        open_.add(id(node))
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        values, levels = 1, 0
        for child in children:
            size, height = _expanded_size(child, sizes, open_, depth + 1)
            values, levels = values + size, max(levels, height)
            if values > MAX_NODES:
                raise _Refused(
                    f"expands to more than {MAX_NODES:,} values (aliases)", node.start_mark
                )
        open_.discard(id(node))
        known = sizes[id(node)] = (values, levels + 1)
    if depth + known[1] - 1 > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels (aliases)", node.start_mark)
    return known


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly; errors name the source and line."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentError(_too_large(), source=source)
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise DocumentError(f"invalid YAML: {exc}", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"invalid YAML: {problem}", source=source, field=where) from None


def _too_large() -> str:
    return (
        f"larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB; a document describes "
        "the work, data travels as files or stage outputs"
    )


def read_yaml_file(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentError(_too_large(), source=str(path))
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise DocumentError("no such file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"cannot read: {exc}", source=str(path)) from None
    return parse_yaml(text, str(path))


def load_document(path: Path, model: type[M]) -> M:
    """Read `path` and validate it as `model`; raise DocumentError naming the field."""
    return validate_document(read_yaml_file(path), model, source=str(path))


def validate_document(data: Any, model: type[M], *, source: str) -> M:
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise DocumentError(
            f"expected a mapping of {model.__name__} fields, got {kind}", source=source
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _document_error(exc, model, source) from None


def _document_error(exc: ValidationError, model: type[BaseModel], source: str) -> DocumentError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        field, message = _join_path(loc, cause.field), cause.detail
    else:
        field, message = format_loc(loc), _message(first, model, loc)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return DocumentError(message, source=source, field=field or None)


def format_loc(loc: tuple[Any, ...]) -> str:
    """('stages', 1, 'needs', 0) -> 'stages[1].needs[0]'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _join_path(loc: tuple[Any, ...], field: str) -> str:
    prefix = format_loc(loc)
    return f"{prefix}.{field}" if prefix else field


def _message(error: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    if error["type"] == "extra_forbidden":
        valid = valid_keys(model, loc[:-1])
        hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
        return f"unknown key {loc[-1]!r}{hint}"
    if error["type"] == "missing":
        return "this field is required"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if error["type"] not in ("value_error", "assertion_error") and not isinstance(
        value, dict | list
    ):
        message += f" (got {value!r})"
    return message


def valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at `loc` inside `model` (best effort)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = _inner_model(field.annotation)
        else:
            current = _inner_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / dict[str, ...] / Annotated[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    if get_origin(annotation) is None:
        return None
    return None
