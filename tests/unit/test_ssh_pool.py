"""Sharing: one SshConnection per site and settings, closed by its last user (no network:
nothing connects before the first command)."""

from __future__ import annotations

import pytest

from registry.site import SshSettings
from sites.errors import SiteError
from sites.ssh.transport import ConnectionPool, SshTransport

SETTINGS = SshSettings(host="login.example.org", user="u", host_key=None)


def test_transports_for_one_site_share_one_connection() -> None:
    pool = ConnectionPool()
    first = SshTransport("lumi", SETTINGS, pool=pool)
    second = SshTransport("lumi", SETTINGS, pool=pool)

    assert first.connection is second.connection
    assert pool.connections() == [first.connection]


def test_other_sites_or_settings_get_their_own_connection() -> None:
    pool = ConnectionPool()
    lumi = SshTransport("lumi", SETTINGS, pool=pool)
    other_site = SshTransport("leonardo", SETTINGS, pool=pool)
    other_user = SshTransport("lumi", SETTINGS.model_copy(update={"user": "v"}), pool=pool)

    assert len({id(t.connection) for t in (lumi, other_site, other_user)}) == 3


def test_the_last_user_closes_the_connection() -> None:
    pool = ConnectionPool()
    first = SshTransport("lumi", SETTINGS, pool=pool)
    second = SshTransport("lumi", SETTINGS, pool=pool)

    first.close()
    first.close()  # twice is harmless and does not release the other user's share
    assert pool.connections() == [second.connection]

    second.close()
    assert pool.connections() == []
    with pytest.raises(SiteError, match="closed"):
        second.run("true")


def test_shared_uses_the_process_wide_pool() -> None:
    one = SshTransport("pool-test", SETTINGS)
    two = SshTransport("pool-test", SETTINGS)
    try:
        assert one.connection is two.connection
    finally:
        one.close()
        two.close()


def test_max_channels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_channels"):
        SshTransport("lumi", SETTINGS, pool=ConnectionPool(), max_channels=0)
