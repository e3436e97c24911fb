"""What a provenance crate may say of an environment: names always, values only where
they are not secret. Pure.

A value is withheld when `registry.env_secrets` (the rule that refuses secrets in
documents at `site add` and `run launch`) says the pair looks like a secret: a
secret-like name that does not point somewhere, or a token-shaped or random value.
Documents stored before that rule may still hold such values; a crate never shows them.
In every value kept, URLs lose their passwords and credential-bearing query values.
"""

from __future__ import annotations

from collections.abc import Mapping

from registry.env_secrets import secret_problem
from registry.redact import MASK, redact_urls


def redact_text(text: str) -> str:
    """`text` with URL passwords and credential query values replaced by `***`."""
    return redact_urls(text)


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
