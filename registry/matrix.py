"""Evaluation matrices: the cells of a stage's `array` (INTERFACE.md, "Run spec"). Pure.

An array is written three ways:
- `{language: [bg, cs]}`: one key, one cell per value (as always);
- `{language: [fi, cs], task: [belebele, flores], n_shot: [0, 5]}`: the product of the
  keys, in the order written (the last key varies fastest);
- `{from: tasks.csv}`: the rows of a CSV file next to the spec, whose header row names
  the keys. The file is read at launch (`read_cells_csv`) and its cells are stored in
  the spec as `{from: tasks.csv, cells: [...]}`, so a stored run never needs the file.
A stage's `exclude: [{task: flores, n_shot: 5}]` drops every cell that matches all the
given pairs.

Each cell is a mapping key -> text. Its canonical value (`cell_value`) is what jobs see
as `HPCFLEET_ARRAY_VALUE` and what job records keep: the value itself for a one-key
array (unchanged from single-key arrays), `language=fi,task=belebele,n_shot=0` for
several keys.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import product
from typing import Any

Cell = dict[str, str]
MAX_CELLS = 100_000  # the same bound as MAX_ARRAY_VALUES of a one-key array
MAX_CELL_VALUE_CHARS = 200  # job records keep the canonical value in 200 characters
MAX_CSV_BYTES = 4 * 1024 * 1024
FROM_KEY = "from"
CELLS_KEY = "cells"
EXCLUDE_KEY = "exclude"  # also read inside the array: {..., exclude: [...]}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MatrixError(ValueError):
    """An array, exclusion or cells file that does not describe a matrix."""


def text(value: object) -> str:
    """A scalar as jobs and result rows see it: `str()`, as one-key arrays always had it."""
    return str(value)


def check_keys(keys: Sequence[str]) -> None:
    """Keys are words (not `params`), distinct even as environment names (upper case)."""
    for key in keys:
        if not _KEY.fullmatch(key) or key in ("params", FROM_KEY, CELLS_KEY, EXCLUDE_KEY):
            raise MatrixError(f"{key!r} is not a valid array key (a word, not 'params')")
    upper = Counter(k.upper() for k in keys)
    clash = sorted(k for k in keys if upper[k.upper()] > 1)
    if clash:
        raise MatrixError(
            f"array keys {', '.join(clash)} differ only in case "
            "(each is exported as HPCFLEET_CELL_<KEY>)"
        )


def product_size(values: Mapping[str, Sequence[object]]) -> int:
    size = 1
    for listed in values.values():
        size *= len(listed)
    return size


def product_cells(values: Mapping[str, Sequence[object]]) -> list[Cell]:
    """The cells of `{key: [values]}`: their product, the last key varying fastest."""
    keys = list(values)
    if product_size(values) > MAX_CELLS:
        raise MatrixError(f"the array has {product_size(values)} cells, more than {MAX_CELLS}")
    return [dict(zip(keys, map(text, row), strict=True)) for row in product(*values.values())]


def apply_exclude(
    cells: list[Cell], keys: Sequence[str], exclude: Sequence[Mapping[str, object]]
) -> list[Cell]:
    """`cells` without those matching every pair of some exclusion; an exclusion naming
    an unknown key, or matching no cell (a typo), is an error."""
    rules = []
    for index, rule in enumerate(exclude):
        unknown = sorted(set(rule) - set(keys))
        if unknown or not rule:
            raise MatrixError(
                f"exclude[{index}]: {'unknown key ' + unknown[0] if unknown else 'empty'}; "
                f"the array's keys are {', '.join(keys)}"
            )
        rules.append({k: text(v) for k, v in rule.items()})
    kept: list[Cell] = []
    used = [False] * len(rules)
    for cell in cells:
        hits = [i for i, rule in enumerate(rules) if all(cell[k] == v for k, v in rule.items())]
        for i in hits:
            used[i] = True
        if not hits:
            kept.append(cell)
    unused = [i for i, hit in enumerate(used) if not hit]
    if unused:
        raise MatrixError(f"exclude[{unused[0]}] matches no cell of the array")
    return kept


def cell_value(cell: Mapping[str, str]) -> str:
    """The canonical text of a cell (see the module docstring)."""
    if len(cell) == 1:
        return next(iter(cell.values()))
    return ",".join(f"{k}={v}" for k, v in cell.items())


def check_cells(cells: Sequence[Mapping[str, str]]) -> None:
    """Between 1 and MAX_CELLS cells, no two alike, canonical values short enough."""
    if not cells:
        raise MatrixError("the array has no cells")
    if len(cells) > MAX_CELLS:
        raise MatrixError(f"the array has {len(cells)} cells, more than {MAX_CELLS}")
    values = [cell_value(c) for c in cells]
    long = next((v for v in values if len(v) > MAX_CELL_VALUE_CHARS), None)
    if long is not None:
        raise MatrixError(f"cell {long[:60]!r}... is longer than {MAX_CELL_VALUE_CHARS} characters")
    counts = Counter(values)  # linear: matrices hold 10^5 cells
    repeated = sorted(v for v, count in counts.items() if count > 1)
    if repeated:
        raise MatrixError(f"cells repeat: {', '.join(repeated[:5])}")


def read_cells_csv(content: str, name: str) -> list[Cell]:
    """The cells of a CSV file with a header row of keys; errors name the file and line."""
    if len(content.encode()) > MAX_CSV_BYTES:
        raise MatrixError(f"{name} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
    rows = list(csv.reader(io.StringIO(content)))
    rows = [row for row in rows if any(field.strip() for field in row)]
    if not rows:
        raise MatrixError(f"{name} is empty; its first row names the keys, e.g. language,task")
    header = [field.strip() for field in rows[0]]
    if len(set(header)) != len(header):
        raise MatrixError(f"{name}, header row: a key appears twice")
    try:
        check_keys(header)
    except MatrixError as exc:
        raise MatrixError(f"{name}, header row: {exc}") from None
    cells = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise MatrixError(
                f"{name}, row {number}: {len(row)} fields, the header has {len(header)}"
            )
        cells.append(dict(zip(header, (field.strip() for field in row), strict=True)))
    try:
        check_cells(cells)
    except MatrixError as exc:
        raise MatrixError(f"{name}: {exc}") from None
    return cells


def matrix_array(value: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's `array` as written, checked and normalised (see the module docstring)."""
    if FROM_KEY in value:
        return _file_array(value)
    if not value:
        raise MatrixError("an array has at least one key, e.g. {language: [bg, cs]}")
    check_keys(list(value))
    normalised: dict[str, Any] = {}
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise MatrixError(f"{key}: a non-empty list of values, e.g. {key}: [a, b]")
        if any(not isinstance(v, str | int | float | bool) for v in values):
            raise MatrixError(f"{key}: values are strings or numbers")
        if len(values) > MAX_CELLS:
            raise MatrixError(f"{key}: more than {MAX_CELLS} values")
        repeated = sorted(v for v, n in Counter(map(text, values)).items() if n > 1)
        if repeated:
            raise MatrixError(f"array values repeat: {', '.join(repeated[:5])}")
        normalised[key] = values
    if product_size(normalised) > MAX_CELLS:
        raise MatrixError(f"the array has {product_size(normalised)} cells, more than {MAX_CELLS}")
    return normalised


def _file_array(value: Mapping[str, Any]) -> dict[str, Any]:
    path = value[FROM_KEY]
    extra = sorted(set(value) - {FROM_KEY, CELLS_KEY})
    if extra:
        raise MatrixError(f"an array read from a file takes no other key ({extra[0]!r})")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise MatrixError(f"from: {path!r} is a file next to the spec (relative, no '..')")
    cells = value.get(CELLS_KEY)
    if cells is None:
        return {FROM_KEY: path}
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise MatrixError("cells: a list of {key: value} mappings")
    normalised = [{str(k): text(v) for k, v in c.items()} for c in cells]
    keys = list(normalised[0]) if normalised else []
    check_keys(keys)
    if any(list(c) != keys for c in normalised):
        raise MatrixError("cells: every cell has the same keys, in the same order")
    check_cells(normalised)
    return {FROM_KEY: path, CELLS_KEY: normalised}


def array_cells(array: Mapping[str, Any]) -> list[Cell] | None:
    """The cells of a normalised array (before exclusions); None for a file not read yet."""
    if FROM_KEY in array:
        cells = array.get(CELLS_KEY)
        return None if cells is None else [dict(c) for c in cells]
    return product_cells(array)
