"""What a provenance crate may say of an environment: names always, values only where
they are not secret. Pure.

A value is withheld when `registry.env_secrets` (the rule that refuses secrets in
documents at `site add` and `run launch`) says the pair looks like a secret: a
secret-like name that does not point somewhere, or a token-shaped or random value.
Documents stored before that rule may still hold such values; a crate never shows them.
In every value kept, URLs lose their passwords and credential-bearing query values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from registry.env_secrets import secret_problem

MASK = "***"
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")
_SECRET_QUERY = re.compile(
    r"([?&](?:[^=&\s]*(?:pass|pwd|secret|token|key|credential|signature|sig|auth)[^=&\s]*)=)"
    r"[^&#\s]*",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """`text` with URL passwords and credential query values replaced by `***`."""
    return _SECRET_QUERY.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1:{MASK}@", text))


def public_value(name: str, value: str) -> str | None:
    """The value of `name` as a crate may show it; None when it must not be shown."""
    if secret_problem(name, value) is not None:
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
