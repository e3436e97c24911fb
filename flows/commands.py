"""Filling `{placeholders}` in stage commands. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from registry.runspec import PLACEHOLDER, RunSpec, Stage


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` by `values[name]`; `{{`/`}}` become literal braces.

    The spec was validated, so every name is known; a missing one is a bug (KeyError).
    """

    def replace(match: object) -> str:
        group = match.group(0)  # type: ignore[attr-defined]
        if group == "{{":
            return "{"
        if group == "}}":
            return "}"
        return values[match.group(1)]  # type: ignore[attr-defined]

    return PLACEHOLDER.sub(replace, text)


def placeholder_values(
    spec: RunSpec, stage: Stage, run_id: str, attempt: int, array_value: str | None
) -> dict[str, str]:
    values = {f"params.{k}": _text(v) for k, v in spec.params.items()}
    values.update(run_id=run_id, stage=stage.name, attempt=str(attempt))
    if stage.array_key is not None and array_value is not None:
        values[stage.array_key] = array_value
    return values


def render_argv(
    spec: RunSpec, stage: Stage, run_id: str, attempt: int, array_value: str | None
) -> tuple[str, ...]:
    values = placeholder_values(spec, stage, run_id, attempt, array_value)
    return tuple(substitute(arg, values) for arg in stage.command or [])


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
