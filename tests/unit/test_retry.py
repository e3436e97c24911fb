"""Retrying only what a retry can help, within a deadline."""

from __future__ import annotations

import pytest

from flows.retry import with_retries
from sites.errors import SiteError, SiteUnreachable


def test_transient_errors_are_retried_until_success() -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise SiteUnreachable("site-b", "connection refused")
        return "ok"

    assert with_retries(flaky, "probe", sleep=sleeps.append) == "ok"
    assert sleeps == [2.0, 4.0]


def test_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []

    def broken() -> None:
        raise SiteError("site-b", "permission denied", transient=False)

    with pytest.raises(SiteError, match="permission denied"):
        with_retries(broken, "probe", sleep=sleeps.append)
    assert sleeps == []


def test_gives_up_after_the_deadline() -> None:
    sleeps: list[float] = []

    def down() -> None:
        raise SiteUnreachable("site-b", "timed out")

    with pytest.raises(SiteUnreachable):
        with_retries(down, "probe", max_wait=30, sleep=sleeps.append)
    assert sum(sleeps) <= 30 and sleeps == [2.0, 4.0, 8.0, 16.0]
