"""Reading documents from YAML: one model per file, errors that name file and field.

YAML is read with a strict loader: duplicate keys are errors, and `01:00:00` stays a
string (YAML 1.1 would silently read it as the base-60 number 3600).
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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without base-60 numbers, refusing duplicate keys."""

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


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly; errors name the source and line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DocumentError(f"invalid YAML: {problem}", source=source, field=where) from None


def read_yaml_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
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
