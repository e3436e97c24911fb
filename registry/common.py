"""Value types shared by the documents: identifiers, durations, SLURM walltimes, memory.

Every type here round-trips: what it accepts, it stores (`model_dump(mode="json")`) in
a form that it accepts again and reads back to an equal value. Each is bounded so that
its stored form stays ordinary (no `1e-05s`, no `1e+17s`):

| type       | range                          | stored as                    |
|------------|--------------------------------|------------------------------|
| Duration   | 0 to 365 days, in milliseconds | `30s`, `5m`, `2h`, `0.25s`   |
| Walltime   | 1 s to 365 days                | SLURM's `D-HH:MM:SS`         |
| MemoryMiB  | 1 MiB to 1 PiB                 | `512M`, `4G`                 |

Fields narrow these further (a poll interval is 0.1 s to 1 day; see registry.site).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StrictModel(BaseModel):
    """Base of every document: unknown keys are errors; instances are immutable."""

    # inf/nan would be stored as JSON null, which no float field reads back.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _identifier(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


DAY_SECONDS = 86400
MAX_DURATION_SECONDS = 365 * DAY_SECONDS
MAX_MEMORY_MIB = 1024**3  # 1 PiB
_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,12})?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1.5h', '2d' or a number of seconds -> seconds, to the millisecond."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration: write e.g. '30s', '5m', '2h' or '1d'")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not 0 <= seconds <= MAX_DURATION_SECONDS:  # also refuses nan and inf
        raise ValueError(f"{value!r}: a duration is between 0 and 365 days")
    return round(seconds, 3)


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest of '2h', '5m', '30s', '0.25s' that reads back the same."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    # Fixed point, never an exponent: parse_duration reads no '1e-05'.
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]

_WALLTIME = re.compile(
    r"^(?:(?P<days>\d{1,6})-)?(?P<a>\d{1,9})(?::(?P<b>\d{1,9}))?(?::(?P<c>\d{1,9}))?$"
)


def parse_walltime(value: Any) -> int:
    """A SLURM time limit -> seconds.

    Accepts SLURM's forms: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS",
    or an integer number of minutes (as SLURM reads a bare number).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time limit")
    if isinstance(value, int):
        return _walltime_bounds(value, value * 60)
    text = str(value).strip()
    match = _WALLTIME.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not a time limit: write 'HH:MM:SS', 'D-HH:MM:SS' or minutes"
        )
    days = int(match.group("days") or 0)
    parts = [int(p) for p in (match.group("a"), match.group("b"), match.group("c")) if p]
    if match.group("days"):
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = 0, parts[0], 0
    if (minutes >= 60 and (len(parts) > 1 or days)) or seconds >= 60:
        raise ValueError(f"{value!r} is not a valid time limit: minutes and seconds go to 59")
    return _walltime_bounds(value, ((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _walltime_bounds(value: Any, seconds: int) -> int:
    if not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"{value!r}: a time limit is between 1 second and 365 days")
    return seconds


def format_walltime(seconds: int) -> str:
    """Seconds -> SLURM's 'D-HH:MM:SS' (or 'HH:MM:SS' under a day)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


Walltime = Annotated[
    int, BeforeValidator(parse_walltime), PlainSerializer(format_walltime, return_type=str)
]

_MEMORY = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,12})?)\s*([KMGTP]?)i?B?\s*$", re.IGNORECASE)
_MEMORY_MB = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_memory(value: Any) -> int:
    """'512M', '4G', '1T' or a number of MiB (as SLURM reads a bare number) -> MiB."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of memory")
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not an amount of memory: write e.g. '512M' or '4G'")
    mib = float(match.group(1)) * _MEMORY_MB[match.group(2).upper()]
    if not 1 <= mib <= MAX_MEMORY_MIB:
        raise ValueError(f"{value!r}: memory is between 1M and 1P")
    return int(mib)


def format_memory(mib: int) -> str:
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


MemoryMiB = Annotated[
    int, BeforeValidator(parse_memory), PlainSerializer(format_memory, return_type=str)
]
