"""One multiplexed SSH connection to a site: opened lazily, shared by every thread,
re-opened with back-off when it drops, never more than `max_channels` channels at once.

Why so strict: HPC login nodes ban addresses that open many connections, and sshd
refuses the 11th channel on a connection (MaxSessions 10; an SFTP session counts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from registry.site import SshSettings
from sites.errors import CredentialsExpired, SiteError, SiteUnreachable
from sites.ssh.config import SshRoute, load_ssh_config, resolve_route
from sites.ssh.connect import ConnectOptions, close_transports, open_route
from sites.ssh.errors import translate_ssh_error

log = logging.getLogger(__name__)

# Channel opens refused by the server ("Connect failed": its session table is full,
# e.g. channels we closed are not reaped yet) are retried this many times, doubling
# the wait from CHANNEL_RETRY_DELAY.
CHANNEL_RETRIES = 6
CHANNEL_RETRY_DELAY = 0.05
# Connection attempts after a drop (or on the first use), doubling RECONNECT_DELAY.
# Slow failures (time-outs) are not retried beyond one connect_timeout in total.
RECONNECT_ATTEMPTS = 3
RECONNECT_DELAY = 0.25


class SshConnection:
    """The single connection to one site (plus its ProxyJump hops)."""

    def __init__(
        self,
        site: str,
        settings: SshSettings,
        *,
        ssh_config_path: Path | None = None,
        options: ConnectOptions | None = None,
        max_channels: int = 8,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.site = site
        self.settings = settings
        self.options = options or ConnectOptions()
        self.max_channels = max_channels
        self._ssh_config_path = ssh_config_path
        self._route: SshRoute | None = None
        self._lock = threading.Lock()  # guards connecting; held while (re)connecting
        self._slots = threading.BoundedSemaphore(max_channels)
        self._transports: list[paramiko.Transport] = []
        self._closed = False
        self.logins = 0  # successful logins so far (each one is a new TCP connection)

    @property
    def route(self) -> SshRoute:
        """Where this connection goes, resolved against ~/.ssh/config on first use."""
        if self._route is None:
            self._route = resolve_site_route(self.site, self.settings, self._ssh_config_path)
        return self._route

    def transport(self) -> paramiko.Transport:
        """The live transport to the target, connecting (with back-off) if needed."""
        with self._lock:
            if self._closed:
                raise SiteError(self.site, "the SSH transport was closed", transient=False)
            if self._transports and self._transports[-1].is_active():
                return self._transports[-1]
            if self._transports:
                log.info("site %s: SSH connection lost; reconnecting", self.site)
                close_transports(self._transports)
                self._transports = []
            self._transports = self._connect_with_backoff()
            self.logins += 1
            return self._transports[-1]

    def is_connected(self) -> bool:
        return bool(self._transports) and self._transports[-1].is_active()

    @contextmanager
    def channel(self, action: str) -> Iterator[paramiko.Channel]:
        """An open session channel; waits while `max_channels` are in use."""
        with self._slots:
            channel = self._open_session(action)
            try:
                yield channel
            finally:
                channel.close()

    def discard(self, transport: paramiko.Transport) -> None:
        """Drop `transport` (it looks dead) so that the next use reconnects."""
        with self._lock:
            if self._transports and self._transports[-1] is transport:
                close_transports(self._transports)
                self._transports = []

    def close(self) -> None:
        with self._lock:
            self._closed = True
            close_transports(self._transports)
            self._transports = []

    def _open_session(self, action: str) -> paramiko.Channel:
        delay = CHANNEL_RETRY_DELAY
        reconnected = False
        for attempt in range(CHANNEL_RETRIES + 1):
            transport = self.transport()
            try:
                return transport.open_session(timeout=self.options.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if _session_table_full(exc) and attempt < CHANNEL_RETRIES:
                    time.sleep(delay)
                    delay *= 2
                    continue
                if not transport.is_active() and not reconnected:
                    # Died before the command was sent: safe to reconnect and go on.
                    reconnected = True
                    continue
                if _no_answer(exc):
                    # The server does not answer at all: the connection is likely dead
                    # (TCP would take minutes to say so). The next call reconnects.
                    self.discard(transport)
                translated = translate_ssh_error(self.site, exc, f"{action}: opening a channel")
                if translated is None:
                    raise
                raise translated from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_with_backoff(self) -> list[paramiko.Transport]:
        route = self.route
        started = time.monotonic()
        delay = RECONNECT_DELAY
        for attempt in range(1, RECONNECT_ATTEMPTS + 1):
            try:
                transports = open_route(
                    self.site,
                    route,
                    pinned_host_keys(self.settings),
                    self.options,
                    [self.settings.host_ca] if self.settings.host_ca else [],
                )
            except SiteError as exc:
                slow = time.monotonic() - started + delay > self.options.connect_timeout
                # Expired credentials come back only when a person renews them.
                renewal = isinstance(exc, CredentialsExpired)
                if not exc.transient or renewal or attempt == RECONNECT_ATTEMPTS or slow:
                    raise
                log.info(
                    "site %s: connection attempt %d failed (%s); retrying in %.2f s",
                    self.site,
                    attempt,
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
                continue
            log.debug("site %s: connected to %s", self.site, route.target.address)
            return transports
        raise AssertionError("unreachable")  # pragma: no cover


def pinned_host_keys(settings: SshSettings) -> list[str]:
    """Every key pinned for the site: `host_key` and `host_keys`."""
    return ([settings.host_key] if settings.host_key else []) + list(settings.host_keys)


def resolve_site_route(site: str, settings: SshSettings, ssh_config_path: Path | None) -> SshRoute:
    """`resolve_route` with ~/.ssh/config (or `ssh_config_path`); a config that cannot
    be read or used is a non-transient `SiteUnreachable`."""
    try:
        return resolve_route(settings, load_ssh_config(ssh_config_path))
    except (OSError, ValueError, paramiko.SSHException) as exc:
        raise SiteUnreachable(
            site, f"cannot resolve ssh host {settings.host!r}: {exc}", transient=False
        ) from exc


def _session_table_full(exc: BaseException) -> bool:
    """sshd refused the channel ("Connect failed": MaxSessions reached). paramiko keeps
    the refusal in one slot per connection, so a concurrent opener may see it replaced
    by a generic "Unable to open channel."."""
    return isinstance(exc, paramiko.ChannelException) or str(exc) == "Unable to open channel."


def _no_answer(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or str(exc) == "Timeout opening channel."
