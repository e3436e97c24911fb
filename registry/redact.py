"""What may be shown of a secret: URLs without their passwords, document values only to
their owner. One place, used by every command that prints a URL or a document.

- `redact_url`: a URL with the password of its user part, and the values of query
  parameters that carry credentials (`password=`, `token=`, `X-Amz-Signature=`, ...),
  replaced by `***`. Database URLs (`postgresql+psycopg://u:pw@h/db`) included.
- `redact_urls`: the same for every URL inside a message (an error from a driver).
- `masked_env`: the names of env variables with their values masked, for everyone but
  the partner who owns the document (a site's `environment.env`, a stage's `env`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
# Query parameter names whose values are credentials (compared in lower case).
_SECRET_PARAM = re.compile(
    r"pass(word|wd)?|pwd|secret|token|key|credential|signature|sig|auth|session", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """`url` with its password and credential-bearing query values replaced by `***`.

    Everything else is kept as written (`sqlite:////abs/path` keeps its four slashes).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_userinfo(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
        url = url.replace(parts.netloc, netloc, 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            masked = [(n, MASK if _SECRET_PARAM.search(n) else v) for n, v in pairs]
            head = url.partition("?")[0]
            fragment = f"#{parts.fragment}" if parts.fragment else ""
            url = f"{head}?{urlencode(masked, safe='*')}{fragment}"
    return url


def _redact_userinfo(url: str) -> str:
    """Fallback for a URL `urlsplit` refuses (a bad port, brackets): mask `user:pw@`."""
    return re.sub(r"(://[^/@:\s]*):[^/@\s]*@", rf"\1:{MASK}@", url)


def redact_urls(text: str) -> str:
    """`text` with every URL in it redacted (`redact_url`)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variable names, every value masked."""
    return dict.fromkeys(env, MASK)


def shows_values(viewer: str | None, owner: str) -> bool:
    """Whether `viewer` (the partner the CLI acts as; None: unknown) sees the values of
    a document owned by `owner`."""
    return viewer is not None and viewer == owner
