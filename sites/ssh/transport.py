"""`SshTransport`: reach a site over SSH (paramiko), one shared connection per site.

    transport = SshTransport("lumi", site.ssh)        # cheap: connects on first use
    transport.run("squeue -h -u $USER", timeout=30)
    transport.put(Path("data"), "runs/r1/data")       # files and directory trees
    transport.close()

Every `SshTransport` for the same site and settings in this process shares ONE
`SshConnection` (the `ConnectionPool`), which carries at most `max_channels` channels
at a time; callers beyond that wait. The connection closes when the last transport
using it is closed. Host keys are verified against `host_key`/`host_keys`, `host_ca` or
`known_hosts` and never added automatically; `fetch_host_keys` reads the keys of every
login node behind the host name for `site trust`.

Pieces (this package): `config_file` + `config` (resolve ~/.ssh/config), `hostkeys` and
`certificates` (verification, fingerprints), `identities` (keys and user certificates),
`connect` (sockets, hops, authentication), `connection` (sharing, reconnects), `channel`
(channel I/O), `transfer` (put/get), `errors` (error mapping).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from registry.site import SshSettings
from sites.errors import SiteError, SiteUnreachable
from sites.ssh import transfer
from sites.ssh.channel import (
    BackgroundReader,
    read_all,
    send_all,
)
from sites.ssh.config import SshRoute
from sites.ssh.connect import ConnectOptions
from sites.ssh.connect import fetch_host_key as _fetch_host_key
from sites.ssh.connection import SshConnection, resolve_site_route
from sites.ssh.errors import ssh_errors
from sites.transport import CommandResult, TransferLimits

__all__ = [
    "ConnectionPool",
    "SshTransport",
    "certificate_checks",
    "fetch_host_key",
    "fetch_host_keys",
    "resolved_connection",
]


@dataclass(frozen=True)
class _PoolKey:
    site: str
    settings: str  # SshSettings as canonical JSON
    ssh_config_path: str | None
    options: ConnectOptions
    max_channels: int


class ConnectionPool:
    """The process-wide registry of `SshConnection`s, one per site + settings, counted
    by how many transports use each. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[_PoolKey, tuple[SshConnection, int]] = {}

    def acquire(
        self,
        site: str,
        settings: SshSettings,
        *,
        ssh_config_path: Path | None,
        options: ConnectOptions,
        max_channels: int,
    ) -> SshConnection:
        key = _PoolKey(
            site,
            settings.model_dump_json(),
            str(ssh_config_path) if ssh_config_path else None,
            options,
            max_channels,
        )
        with self._lock:
            connection, users = self._connections.get(key, (None, 0))
            if connection is None:
                connection = SshConnection(
                    site,
                    settings,
                    ssh_config_path=ssh_config_path,
                    options=options,
                    max_channels=max_channels,
                )
            self._connections[key] = (connection, users + 1)
            return connection

    def release(self, connection: SshConnection) -> None:
        """One user fewer; the last one out closes the connection."""
        with self._lock:
            for key, (known, users) in list(self._connections.items()):
                if known is connection:
                    if users > 1:
                        self._connections[key] = (known, users - 1)
                        return
                    del self._connections[key]
                    break
        connection.close()

    def connections(self) -> list[SshConnection]:
        with self._lock:
            return [connection for connection, _ in self._connections.values()]

    def close_all(self) -> None:
        """Close every connection (at shutdown, or between tests)."""
        with self._lock:
            connections = [connection for connection, _ in self._connections.values()]
            self._connections.clear()
        for connection in connections:
            connection.close()


POOL = ConnectionPool()


class SshTransport:
    """The `Transport` protocol over SSH. See the module docstring."""

    def __init__(
        self,
        site: str,
        settings: SshSettings,
        *,
        ssh_config_path: Path | None = None,
        connect_timeout: float = 10,
        keepalive: float = 15,
        max_channels: int = 8,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.site = site
        self._pool = pool or POOL
        self._connection = self._pool.acquire(
            site,
            settings,
            ssh_config_path=ssh_config_path,
            options=ConnectOptions(connect_timeout=connect_timeout, keepalive=keepalive),
            max_channels=max_channels,
        )
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def connection(self) -> SshConnection:
        """The shared connection (for diagnostics: `logins`, `is_connected()`)."""
        return self._connection

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run `command` in the login shell. A non-zero exit is returned. Not reaching
        the site or losing the connection mid-command raises a transient
        `SiteUnreachable`; passing `timeout` (seconds) a transient `SiteError`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        action = f"running {_shorten(command)}"
        with self._errors(action), self._connection.channel(action) as channel:
            channel.exec_command(command)
            try:
                if stdin:
                    reader = BackgroundReader(channel, deadline)
                    send_all(channel, stdin, deadline)
                    output = reader.result()
                else:
                    channel.shutdown_write()
                    output = read_all(channel, deadline)
            except TimeoutError:  # CommandTimeout, or stdin not taken in time
                # Closing the channel (on the way out) closes the command's pipes.
                raise SiteError(
                    self.site,
                    f"command {_shorten(command)} did not finish within {timeout} s",
                    transient=True,
                ) from None
            if output.connection_lost:
                raise SiteUnreachable(
                    self.site,
                    f"{action}: the connection was lost before the command finished "
                    "(it may or may not have run)",
                )
        return CommandResult(
            command=command,
            returncode=output.exit_status,
            stdout=output.stdout.decode("utf-8", "replace"),
            stderr=output.stderr.decode("utf-8", "replace"),
        )

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file or directory tree to `remote`, creating parents. The data
        is checked with SHA-256 on both ends; a file appears only when complete."""
        with self._errors(f"uploading {local} to {remote}"):
            transfer.put(self.site, self._connection.channel, Path(local), remote)

    def get(self, remote: str, local: Path, *, limits: TransferLimits | None = None) -> None:
        """Copy a remote file or directory tree to `local`, creating parents; what the
        site sends is checked as untrusted (`sites.ssh.untar`) and capped by `limits`."""
        with self._errors(f"downloading {remote} to {local}"):
            transfer.get(self.site, self._connection.channel, remote, Path(local), limits)

    def close(self) -> None:
        """Stop using the shared connection (closed when its last user closes). Safe
        to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.release(self._connection)

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _errors(self, action: str) -> AbstractContextManager[None]:
        if self._closed:
            raise SiteError(self.site, f"{action}: this transport was closed")
        return _connection_errors(self.site, action, self._connection)


def fetch_host_key(
    site: str,
    settings: SshSettings,
    *,
    ssh_config_path: Path | None = None,
    connect_timeout: float = 10,
) -> tuple[str, str]:
    """Connect to the site's SSH server without authenticating and return its host key
    as (`"ssh-ed25519 AAAA..."` line, `SHA256:...` fingerprint), for `site trust`.
    ProxyJump hops are verified as usual (known_hosts) and authenticated."""
    route = resolve_site_route(site, settings, ssh_config_path)
    key = _fetch_host_key(site, route, ConnectOptions(connect_timeout=connect_timeout))
    return key.line, key.fingerprint


def fetch_host_keys(
    site: str,
    settings: SshSettings,
    *,
    ssh_config_path: Path | None = None,
    connect_timeout: float = 10,
) -> list[tuple[str, str, str]]:
    """Every distinct host key behind the site's host name, as (line, fingerprint,
    address): a round-robin name (Leonardo's login01..07) resolves to several login
    nodes, each with its own key. Through a ProxyJump or ProxyCommand the name is
    resolved on the far side: then there is the one key `fetch_host_key` reads."""
    route = resolve_site_route(site, settings, ssh_config_path)
    options = ConnectOptions(connect_timeout=connect_timeout)
    target = route.target
    if route.jumps or target.proxy_command:
        key = _fetch_host_key(site, route, options)
        return [(key.line, key.fingerprint, target.hostname)]
    found: dict[str, tuple[str, str, str]] = {}
    failures: list[SiteUnreachable] = []
    for address in _addresses(site, target.hostname, target.port):
        try:
            key = _fetch_host_key(site, SshRoute(replace(target, hostname=address)), options)
        except SiteUnreachable as exc:  # one node down must not hide the others' keys
            failures.append(exc)
            continue
        found.setdefault(key.line, (key.line, key.fingerprint, address))
    if not found and failures:
        raise failures[0]
    return list(found.values())


def resolved_connection(
    site: str, settings: SshSettings, *, ssh_config_path: Path | None = None
) -> dict[str, Any]:
    """`site show --resolved`: the effective connection (see `sites.ssh.resolved`)."""
    from datetime import UTC, datetime

    from sites.ssh.resolved import resolved_connection as describe

    route = resolve_site_route(site, settings, ssh_config_path)
    return describe(settings, route, datetime.now(UTC))


def _addresses(site: str, hostname: str, port: int) -> list[str]:
    with ssh_errors(site, f"resolving {hostname}"):
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def certificate_checks(
    site: str, settings: SshSettings, *, ssh_config_path: Path | None = None
) -> list[tuple[bool, str]]:
    """(ok, detail) per user certificate of the site's login (see `identities`)."""
    from datetime import UTC, datetime

    from sites.ssh.identities import certificate_checks as checks_of

    route = resolve_site_route(site, settings, ssh_config_path)
    return checks_of(route.target, datetime.now(UTC))


@contextmanager
def _connection_errors(site: str, action: str, connection: SshConnection) -> Iterator[None]:
    """`ssh_errors`, plus: anything that failed because the connection died becomes a
    transient `SiteUnreachable` (the next call reconnects)."""
    try:
        with ssh_errors(site, action):
            yield
    except SiteError as exc:
        if isinstance(exc, SiteUnreachable) or connection.is_connected() or not exc.transient:
            raise
        raise SiteUnreachable(site, f"{action}: the connection was lost") from exc


def _shorten(command: str, limit: int = 120) -> str:
    return repr(command if len(command) <= limit else command[:limit] + "...")
