"""Value types shared by the documents: identifiers, durations, SLURM walltimes, memory."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StrictModel(BaseModel):
    """Base of every document: unknown keys are errors; instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1.5h', '2d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration: write e.g. '30s', '5m', '2h' or '1d'")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]

_WALLTIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_walltime(value: Any) -> int:
    """A SLURM time limit -> seconds.

    Accepts SLURM's forms: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS",
    or an integer number of minutes (as SLURM reads a bare number).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time limit")
    if isinstance(value, int):
        minutes = value
        if minutes <= 0:
            raise ValueError(f"{value!r}: a time limit must be positive")
        return minutes * 60
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
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"{value!r}: a time limit must be positive")
    return total


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

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_MEMORY_MB = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}


def parse_memory(value: Any) -> int:
    """'512M', '4G', '1T' or a number of MiB (as SLURM reads a bare number) -> MiB."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of memory")
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not an amount of memory: write e.g. '512M' or '4G'")
    mib = float(match.group(1)) * _MEMORY_MB[match.group(2).upper()]
    if mib < 1:
        raise ValueError(f"{value!r}: memory must be at least 1M")
    return int(mib)


def format_memory(mib: int) -> str:
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


MemoryMiB = Annotated[
    int, BeforeValidator(parse_memory), PlainSerializer(format_memory, return_type=str)
]
