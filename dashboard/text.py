"""Short texts the pages show: times, durations, states; and the escaping that keeps
what users typed as text. Pure.

Streamlit renders titles, captions, alerts, labels and `st.markdown` as GitHub-flavoured
markdown with its own directives (`:red[...]`, `:material/...:`) and math (`$...$`).
A site description, a partner's name, a milestone title, a run name or a failure reason
is typed by someone else: put into markdown as is, `![x](http://evil/b.png)` becomes an
image fetched by every viewer's browser and `[sign in again](http://evil/)` a link that
looks like the dashboard's own. So every user-provided string goes into markdown through
`plain` (or `code`, for an inline code span), and into a plotly label through
`chart_text`; `unsafe_allow_html` is never used.
"""

from __future__ import annotations

import html
import math
import re
import string
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


_MARKDOWN_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
# GitHub-flavoured markdown links bare URLs and e-mail addresses in the *text*, after
# escapes are resolved (Streamlit's renderer does so too): an invisible WORD JOINER
# after the scheme or `www`, and before `@`, keeps them from matching.
_AUTOLINK_STARTS = re.compile(r"(?i)(https?|mailto|xmpp)(?=:)|(www)(?=\.)|(?=@)")
WORD_JOINER = "\u2060"
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_BACKTICKS = re.compile(r"`+")


def one_line(value: object) -> str:
    """`value` as a string on one line: a line break in markdown can start a heading,
    a list or a table."""
    return _LINE_BREAKS.sub(" ", str(value))


def plain(value: object) -> str:
    """`value` as markdown that renders as exactly its text, on one line.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows that for
    all of them): no link, image, emphasis, HTML, heading, table, autolink, Streamlit
    directive or math can start. Bare URLs and e-mail addresses get an invisible word
    joiner so that they stay text too. Surrounding whitespace goes (four leading spaces
    would start a code block).
    """
    unlinked = _AUTOLINK_STARTS.sub(lambda m: m.group(0) + WORD_JOINER, one_line(value).strip())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", unlinked)


def code(value: object) -> str:
    """`value` as an inline code span, whatever backticks it holds (nothing inside a code
    span is markdown); empty for an empty value."""
    text = one_line(value)
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    # CommonMark drops one space from each end when both ends have one (or a backtick
    # would touch the fence): pad so that exactly the text remains.
    spaced = text.startswith(" ") and text.endswith(" ") and text.strip(" ")
    pad = " " if text.startswith("`") or text.endswith("`") or spaced else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def chart_text(value: object) -> str:
    """`value` for a plotly label: plotly renders <a href>, <b> and friends in labels, and
    shows entities as their characters."""
    return html.escape(str(value), quote=False)
