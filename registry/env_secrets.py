"""Refusing secrets in documents' environment variables (site `environment.env`, a
stage's `env`).

Every partner can read every stored document, and its env reaches job scripts, logs
and MLflow; a secret there is a secret given to the consortium. Secrets belong in the
site's own credential store: an identity file or the ssh-agent for logins, an AWS
profile for object storage, a file on the site that the job reads (e.g. `HF_TOKEN_PATH`).

A variable is refused
- by NAME, when a word of it (split at `_`) is TOKEN, SECRET, PASSWORD, PASSWD,
  PASSPHRASE, CREDENTIAL(S), APIKEY or PRIVATE, or its last word is KEY (`WANDB_API_KEY`),
  unless its last word says it points somewhere (`_PATH`, `_FILE`, `_DIR`, ...) or its value
  is a reference (an absolute or home path, or `$VAR`). `TOKENIZERS_PARALLELISM` passes:
  TOKENIZERS is not the word TOKEN.
- by VALUE, when it has a well-known token shape (Hugging Face `hf_…`, GitHub `ghp_…`/
  `github_pat_…`, AWS `AKIA…`, Slack `xox?-…`, GitLab `glpat-…`, OpenAI-style `sk-…`,
  a JWT, a PEM block) or a run of 32+ characters that looks random (lower and upper
  case and digits, switching often, high entropy). Hex strings pass: they are digests
  and commit ids far more often than secrets (a hex secret is still caught by its name).
  The shape rules are a net, not a proof: a secret of an unknown shape with an ordinary
  name can pass.
The error names the variable, never its value.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

_SECRET_WORDS = frozenset(
    {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS"}
    | {"APIKEY", "PRIVATE"}
)
_POINTER_WORDS = frozenset({"PATH", "FILE", "DIR", "FILENAME", "LOCATION", "SOCK", "ENDPOINT"})
_REFERENCE = re.compile(r"^(?:/|~/|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?(?:/|$))")
_TOKEN_SHAPES = (
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{22,})")),
    ("an AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("an API key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    ("a JSON web token", re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]{5,}")),
    ("a private key or certificate", re.compile(r"-----BEGIN ")),
)
_RANDOM_RUN = re.compile(r"[A-Za-z0-9+/=_-]{32,}")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
MIN_RANDOM_BITS_PER_CHAR = 4.0
MIN_SWITCH_RATE = 0.4

WHERE_SECRETS_GO = (
    "documents are readable by every partner; keep secrets in the site's own credential "
    "store (an identity file or the ssh-agent, an AWS profile, or a secrets file on the "
    "site that the job reads, e.g. HF_TOKEN_PATH=/home/me/.hf_token)"
)


def secret_problem(name: str, value: str) -> str | None:
    """Why `name=value` looks like a secret, or None. The value is never echoed."""
    words = name.upper().split("_")
    pointer = words[-1] in _POINTER_WORDS or bool(_REFERENCE.match(value))
    if not pointer and (_SECRET_WORDS.intersection(words) or words[-1] == "KEY"):
        return f"{name} is named like a secret"
    for what, shape in _TOKEN_SHAPES:
        if shape.search(value):
            return f"the value of {name} looks like {what}"
    if any(_looks_random(run) for run in _RANDOM_RUN.findall(value)):
        return f"the value of {name} looks like a key or token (a long random string)"
    return None


def _looks_random(run: str) -> bool:
    if _HEX.match(run) or run.startswith("/") or "//" in run:
        return False
    kinds = [_kind(c) for c in run if c.isalnum()]
    if len(set(kinds)) < 3:
        return False
    # Words, versions and paths switch between lower case, upper case and digits now and
    # then (~0.1-0.3 of the characters); random base62/base64 about 0.6 of them.
    switches = sum(a != b for a, b in itertools.pairwise(kinds)) / (len(kinds) - 1)
    return switches >= MIN_SWITCH_RATE and _bits_per_char(run) >= MIN_RANDOM_BITS_PER_CHAR


def _kind(char: str) -> str:
    if char.islower():
        return "lower"
    return "upper" if char.isupper() else "digit"


def _bits_per_char(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def check_env(env: dict[str, str]) -> dict[str, str]:
    """A pydantic field check: raise ValueError naming the first secret-like variable."""
    for name, value in env.items():
        problem = secret_problem(name, value)
        if problem:
            raise ValueError(f"{problem}: {WHERE_SECRETS_GO}")
    return env
