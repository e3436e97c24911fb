"""Reading the JSON lines jobs append to `$HPCFLEET_METRICS`. Pure, apart from
`read_metrics_file`, which reads one such file with a cap on its size."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

# A task's metrics file is read whole; one that is bigger is refused, not read.
METRICS_FILE_MAX_BYTES = 16 * 1024 * 1024

_KEY = re.compile(r"^[A-Za-z0-9_\-./ ]{1,250}$")


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
    if not isinstance(key, str) or not _KEY.match(key):
        return f"bad key {key!r} (letters, digits, _ - . / and spaces)"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"value of {key!r} must be a finite number, got {value!r}"
    step = record.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        return f"step of {key!r} must be an integer, got {step!r}"
    return None
