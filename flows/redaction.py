"""What a provenance crate may say of an environment: names always, values only where
they are not secret. Pure.

A value is withheld when its NAME is secret-like (a word of it, split at `_`, is TOKEN,
SECRET, PASSWORD, PASSWD, PASSPHRASE, CREDENTIAL(S), APIKEY or PRIVATE, or its last
word is KEY, unless its last word says it points somewhere: `_PATH`, `_FILE`, `_DIR`),
or when the value looks like a token (a long run of mixed-case letters and digits). In
every value kept, URLs lose their passwords and credential-bearing query values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "***"
_SECRET_WORDS = frozenset(
    {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS"}
    | {"APIKEY", "PRIVATE"}
)
_POINTER_WORDS = frozenset({"PATH", "FILE", "DIR", "FILENAME", "LOCATION", "SOCK"})
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"([?&](?:[^=&\s]*(?:pass|pwd|secret|token|key|credential|signature|sig|auth)[^=&\s]*)=)"
    r"[^&#\s]*",
    re.IGNORECASE,
)
_RANDOM_RUN = re.compile(r"[A-Za-z0-9+/_-]{32,}")


def is_secret_name(name: str) -> bool:
    words = name.upper().split("_")
    if words[-1] in _POINTER_WORDS:
        return False
    return bool(_SECRET_WORDS.intersection(words)) or words[-1] == "KEY"


def redact_text(text: str) -> str:
    """`text` with URL passwords and credential query values replaced by `***`."""
    return _SECRET_QUERY.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1:{MASK}@", text))


def looks_like_token(value: str) -> bool:
    for run in _RANDOM_RUN.findall(value):
        kinds = {("d" if c.isdigit() else "u" if c.isupper() else "l") for c in run if c.isalnum()}
        if len(kinds) == 3 and "/" not in run:
            return True
    return False


def public_value(name: str, value: str) -> str | None:
    """The value of `name` as a crate may show it; None when it must not be shown."""
    if is_secret_name(name) or looks_like_token(value):
        return None
    return redact_text(value)


def public_env(env: Mapping[str, str]) -> dict[str, str | None]:
    return {name: public_value(name, value) for name, value in env.items()}


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a script shown in a crate: withheld values replaced by `***`."""
    return {
        name: (shown if (shown := public_value(name, v)) is not None else MASK)
        for name, v in env.items()
    }
