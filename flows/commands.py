"""Filling `{placeholders}` in stage commands. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from registry.matrix import cell_value
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
    spec: RunSpec,
    stage: Stage,
    run_id: str,
    attempt: int,
    array_value: str | None,
    index: int | None = None,
) -> dict[str, str]:
    values = {f"params.{k}": _text(v) for k, v in spec.params.items()}
    values.update(run_id=run_id, stage=stage.name, attempt=str(attempt))
    if stage.array is not None and array_value is not None:
        values.update(cell_of(stage, array_value, index))
    return values


def cell_of(stage: Stage, array_value: str, index: int | None = None) -> dict[str, str]:
    """The cell whose canonical value is `array_value` ({key: value} of each array key);
    `index`, its array index, spares the search."""
    keys = stage.array_keys
    if len(keys) == 1:
        return {keys[0]: array_value}
    cells = stage.cells
    if index is not None and index < len(cells) and cell_value(cells[index]) == array_value:
        return dict(cells[index])
    for cell in stage.cells:
        if cell_value(cell) == array_value:
            return dict(cell)
    raise KeyError(array_value)


def render_argv(
    spec: RunSpec,
    stage: Stage,
    run_id: str,
    attempt: int,
    array_value: str | None,
    index: int | None = None,
    checkpoint: str | None = None,
) -> tuple[str, ...]:
    values = placeholder_values(spec, stage, run_id, attempt, array_value, index)
    if stage.for_each is not None:
        # No checkpoint yet (a dry run, a provenance script): the placeholder stays.
        values["checkpoint"] = "{checkpoint}" if checkpoint is None else checkpoint
    return tuple(substitute(arg, values) for arg in stage.command or [])


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
