"""URLs without passwords, document values only to their owner (registry/redact.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.redact import MASK, masked_env, redact_url, redact_urls, shows_values


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://hpc:s3cret@db.example.org:5432/hpcfleet",
            "postgresql+psycopg://hpc:***@db.example.org:5432/hpcfleet",
        ),
        ("https://alice:pa:ss@mlflow.example.org/", "https://alice:***@mlflow.example.org/"),
        ("https://alice:p@ss@mlflow.example.org/", "https://alice:***@mlflow.example.org/"),
        ("https://h/x?token=abc&run=1#top", "https://h/x?token=***&run=1#top"),
        (
            "s3://b/k?X-Amz-Credential=AKIA&X-Amz-Signature=f00",
            "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        ("postgresql://u:pw@[::1:5432/db", "postgresql://u:***@[::1:5432/db"),
        # Nothing secret: the URL is kept exactly as written.
        ("sqlite:////home/u/.hpcfleet/mlflow.db", "sqlite:////home/u/.hpcfleet/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://user@host/path?run=1", "https://user@host/path?run=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_urls_inside_a_message_are_redacted() -> None:
    message = (
        "cannot open https://a:pw1@mlflow.example.org/api: refused "
        "(database postgresql://u:pw2@db/hpc)."
    )
    shown = redact_urls(message)
    assert "pw1" not in shown and "pw2" not in shown
    assert shown.startswith("cannot open https://a:***@mlflow.example.org/api: refused")
    assert shown.endswith("(database postgresql://u:***@db/hpc).")


@given(
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    password=st.text(
        alphabet=st.characters(blacklist_characters="/?#@[]\\ \t\r\n\x00"), min_size=4
    ),
)
def test_a_password_never_survives(user: str, password: str) -> None:
    url = f"https://{user}:{password}@mlflow.example.org:5000/x"
    assert redact_url(url) == f"https://{user}:{MASK}@mlflow.example.org:5000/x"


def test_document_values_are_for_their_owner_only() -> None:
    assert masked_env({"HF_HOME": "/scratch/p", "A": "b"}) == {"HF_HOME": MASK, "A": MASK}
    assert shows_values("csc", "csc")
    assert not shows_values("cuni", "csc")
    assert not shows_values(None, "csc")


def test_the_mlflow_hint_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcfleet.cli_runs import mlflow_hint

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.org")
    hint = mlflow_hint()
    assert "s3cret" not in hint and "https://alice:***@mlflow.example.org" in hint
