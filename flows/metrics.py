"""Reading the JSON lines jobs append to `$HPCFLEET_METRICS`, and the metric keys they
become in MLflow. Pure, apart from `read_metrics_file`, which reads one such file with a
cap on its size.

MLflow refuses a whole `log_batch` for one bad key, and a refusal after the jobs ran
would fail finished work; so keys are checked here against MLflow's own rules
(`mlflow/utils/validation.py`: `validate_param_and_metric_name`, `path_not_unique`,
`MAX_ENTITY_KEY_LENGTH`), taking the characters it allows on every platform:
- characters: letters, digits, `_ - . /` and spaces (Unicode letters too; not `:`,
  which MLflow refuses on Windows);
- a plain relative path: `posixpath.normpath(key) == key`, not `.`, no leading `/` or
  `..` (so no `a/../b`, `a//b` or trailing `/`);
- at most 250 characters.
A job's key that breaks them is skipped with a warning. An array value becomes one
component of the parent's `<key>/<value>`; a value MLflow would refuse (`c++`, `a/b`,
`..`) is escaped there instead: every character but ASCII letters, digits and `-` as
`_xHH_` (its code point in hex), so `c++` is `c_x2B__x2B_`. The original stays in the
tag `hpcfleet.array_value` of each child run and in `hpcfleet.array_value/<escaped>` on
the parent.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# A task's metrics file is read whole; one that is bigger is refused, not read.
METRICS_FILE_MAX_BYTES = 16 * 1024 * 1024

MAX_KEY_LENGTH = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
_KEY_CHARS = re.compile(r"[/\w.\- ]+")
_SAFE_PART = re.compile(r"[\w.\- ]+")
_RESERVED = re.compile(r"_x[0-9A-F]*_")  # what an escape looks like
ARRAY_VALUE_TAG = "hpcfleet.array_value"


def key_problem(key: str) -> str | None:
    """Why MLflow would refuse `key` as a metric, param or tag name, or None."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return f"1 to {MAX_KEY_LENGTH} characters"
    if not _KEY_CHARS.fullmatch(key):
        return "letters, digits, _ - . / and spaces only"
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        return "a plain relative path: no '..', '//', or leading or trailing '/'"
    return None


def key_part(value: str) -> str:
    """An array value as one component of a metric key: itself when MLflow takes it as
    such, else escaped (`_xHH_`; injective: unescaped parts never contain `_xHH_`)."""
    if _SAFE_PART.fullmatch(value) and value not in (".", "..") and not _RESERVED.search(value):
        return value
    escaped = "".join(
        c if c.isascii() and (c.isalnum() or c == "-") else f"_x{ord(c):X}_" for c in value
    )
    return escaped or "_x_"


def parent_metric_key(key: str, array_value: str) -> str:
    """`<key>/<value>` on the parent run, escaped and cut to MLflow's 250 characters
    (a cut key ends in a hash of key and value, so distinct values stay distinct)."""
    full = f"{key}/{key_part(array_value)}"
    if len(full) <= MAX_KEY_LENGTH:
        return full
    digest = hashlib.sha256(f"{key}\0{array_value}".encode()).hexdigest()[:12].upper()
    return full[: MAX_KEY_LENGTH - 15] + f"_x{digest}_"


def parent_cell_key(key: str, cell_values: Sequence[str]) -> str:
    """`<key>/<v1>/<v2>/...` for a cell of a matrix (e.g. `acc/fi/belebele/5`), each value
    a component as in `parent_metric_key`, cut the same way."""
    full = "/".join([key, *(key_part(v) for v in cell_values)])
    if len(full) <= MAX_KEY_LENGTH:
        return full
    digest = hashlib.sha256("\0".join([key, *cell_values]).encode()).hexdigest()[:12].upper()
    return full[: MAX_KEY_LENGTH - 15] + f"_x{digest}_"


def escaped_array_values(values: Iterable[str]) -> dict[str, str]:
    """{value: how it appears in metric keys} for the values that are escaped."""
    return {v: key_part(v) for v in values if key_part(v) != v}


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int = 0
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class ParsedMetrics:
    points: list[MetricPoint]
    rejected: list[str]  # "line N: why", for the job's log, never fatal

    def last_values(self) -> dict[str, float]:
        """The last value written for each key (the job's final result)."""
        values: dict[str, float] = {}
        for point in self.points:
            values[point.key] = point.value
        return values


class MetricsFileTooLarge(ValueError):
    """A metrics file over the cap; the message names the cap and the size."""


def read_metrics_file(path: Path, max_bytes: int = METRICS_FILE_MAX_BYTES) -> str:
    """The text of `path` ("" if there is none), reading at most `max_bytes` + 1 bytes."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        size = path.stat().st_size
        raise MetricsFileTooLarge(
            f"{path.name} holds {size} bytes, more than the cap of {max_bytes} "
            "(METRICS_FILE_MAX_BYTES); its metrics were not read"
        )
    return data.decode(errors="replace")


def parse_metrics(text: str) -> ParsedMetrics:
    """Parse `{"key": "loss", "value": 2.1, "step": 10}` lines; skip and report bad ones."""
    points: list[MetricPoint] = []
    rejected: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            rejected.append(f"line {number}: not JSON ({exc.msg})")
            continue
        problem = _problem(record)
        if problem:
            rejected.append(f"line {number}: {problem}")
            continue
        step = record.get("step", 0)
        timestamp = record.get("timestamp")
        points.append(
            MetricPoint(
                key=record["key"],
                value=float(record["value"]),
                step=int(step),
                timestamp_ms=int(timestamp) if isinstance(timestamp, int | float) else None,
            )
        )
    return ParsedMetrics(points, rejected)


def _problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "expected an object with 'key' and 'value'"
    key, value = record.get("key"), record.get("value")
    if not isinstance(key, str):
        return f"bad key {key!r} (a string)"
    problem = key_problem(key)
    if problem:
        return f"bad key {key[:100]!r}, skipped: MLflow takes {problem}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"value of {key!r} must be a finite number, got {value!r}"
    step = record.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        return f"step of {key!r} must be an integer, got {step!r}"
    return None
