"""Short texts the pages show: times, durations, states. Pure."""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd

from registry.redact import redact_url

STATE_ICONS = {
    "COMPLETED": "✅", "RUNNING": "🔄", "PENDING": "⏳", "SUBMITTING": "⏳",
    "FAILED": "❌", "CANCELLED": "⛔", "TIMEOUT": "⌛", "PREEMPTED": "⏸️",
    "NODE_FAIL": "💥", "OUT_OF_MEMORY": "💥", "UNKNOWN": "❔",
}
MILESTONE_BADGES = {
    "met": ":green-badge[met]", "on track": ":blue-badge[on track]",
    "at risk": ":orange-badge[⚠️ at risk]", "overdue": ":red-badge[⚠️ overdue]",
}


def when(value: datetime | pd.Timestamp | None) -> str:
    """'2026-05-01 12:30 UTC', or 'never'."""
    if value is None or pd.isna(value):
        return "never"
    return f"{value:%Y-%m-%d %H:%M} UTC"


def duration(seconds: float | None) -> str:
    """'3 s', '4 min 10 s', '2 h 05 min', '3 d 4 h'; '-' when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def state(value: str) -> str:
    """A state with its icon, e.g. '✅ COMPLETED'."""
    return f"{STATE_ICONS.get(value, '')} {value}".strip()


def gpu_hours(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def days_left(days: int) -> str:
    if days < 0:
        return f"{-days} day{'s' if days != -1 else ''} overdue"
    if days == 0:
        return "due today"
    return f"{days} day{'s' if days != 1 else ''} left"




def safe_url(url: str) -> str:
    """A store URL or tracking URI with any password masked (the CLI's own rule)."""
    return redact_url(url)
