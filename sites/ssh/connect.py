"""Open one authenticated paramiko connection along a route (ProxyJump hops + target).

Each hop is a paramiko `Transport`; the first runs over a TCP socket that we open
ourselves (to set TCP_NODELAY and TCP keepalive), each later one over a `direct-tcpip`
channel of the hop before it. Every hop's host key is checked before authenticating.
"""

from __future__ import annotations

import logging
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.ssh_exception import IncompatiblePeer, PartialAuthentication

from sites.errors import CredentialsExpired, HostKeyRejected, SiteUnreachable
from sites.ssh.config import SshEndpoint, SshRoute
from sites.ssh.errors import ssh_errors
from sites.ssh.hostkeys import (
    ExpectedHostKeys,
    HostKey,
    check_host_key,
    expected_host_keys,
    host_key_message,
)
from sites.ssh.identities import candidate_keys

log = logging.getLogger(__name__)
# What a transport runs over: a TCP socket, a channel of the previous hop, a ProxyCommand.
Carrier = socket.socket | paramiko.Channel | paramiko.ProxyCommand

# AES-GCM first: it needs no separate MAC pass, which more than doubles paramiko's
# throughput (measured: 256 MiB upload 2.1 s -> 1.0 s on loopback). The other
# ciphers stay as fallbacks for servers without it.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


@dataclass(frozen=True)
class ConnectOptions:
    """Time-outs and keepalive for every hop of a connection."""

    connect_timeout: float = 10.0
    keepalive: float = 15.0


# The stubs do not declare the private members overridden below.
_Transport: Any = paramiko.Transport


class RekeySafeTransport(_Transport):  # type: ignore[misc]
    """paramiko `Transport` that cannot deadlock or misorder messages while re-keying.

    paramiko's reader thread answers some messages itself (a channel close, a channel
    request). If that happens while a key exchange we started is in progress, the
    reader thread waits for the exchange to end, which only it can finish: the
    connection hangs for 30 s, then dies (paramiko issue #822; reproduced here with
    concurrent commands and a small re-key limit). So every message that may not go
    out during a key exchange is queued instead, from any thread, and the queue is
    sent in order as soon as the new keys are in force. Order matters: a channel EOF
    overtaken by the channel's CLOSE makes OpenSSH drop the whole connection.
    """

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._deferred: list[paramiko.Message] = []

    def _send_user_message(self, data: paramiko.Message) -> None:
        with self.clear_to_send_lock:
            if not self.active:
                return
            if self.clear_to_send.is_set():
                self._send_deferred()
                self._send_message(data)
            else:
                self._deferred.append(data)

    def _parse_newkeys(self, m: paramiko.Message) -> None:
        super()._parse_newkeys(m)
        with self.clear_to_send_lock:
            if self.clear_to_send.is_set():
                self._send_deferred()

    def _send_deferred(self) -> None:
        # Caller holds clear_to_send_lock.
        pending, self._deferred = self._deferred, []
        for message in pending:
            self._send_message(message)


def open_socket(endpoint: SshEndpoint, options: ConnectOptions) -> socket.socket:
    """A TCP connection with TCP_NODELAY (paramiko sets none: ~45 ms lost per round trip
    to Nagle + delayed ACK) and kernel keepalive/user time-out (dead-peer detection)."""
    sock = socket.create_connection(
        (endpoint.hostname, endpoint.port), timeout=options.connect_timeout
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(options.keepalive))
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # Unacknowledged data for this long means the peer is gone (not just slow).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, idle * 4 * 1000)
    sock.settimeout(None)
    return sock


def start_transport(
    channel_or_socket: Carrier,
    options: ConnectOptions,
    host_key_algorithms: list[str] | None = None,
) -> RekeySafeTransport:
    """Run the key exchange (no authentication) and return the transport."""
    transport = RekeySafeTransport(channel_or_socket)
    transport.banner_timeout = options.connect_timeout
    transport.handshake_timeout = options.connect_timeout
    transport.auth_timeout = options.connect_timeout
    security = transport.get_security_options()
    security.ciphers = _prefer(security.ciphers, _PREFERRED_CIPHERS)
    security.digests = _prefer(security.digests, _PREFERRED_MACS)
    if host_key_algorithms:
        security.key_types = host_key_algorithms
    try:
        transport.start_client(timeout=options.connect_timeout)
        if not transport.is_active() or transport.host_key is None:
            raise TimeoutError(f"no key exchange within {options.connect_timeout:g} s")
    except BaseException:
        transport.close()
        raise
    return transport


def open_route(
    site: str,
    route: SshRoute,
    pinned_host_keys: str | Sequence[str] | None,
    options: ConnectOptions,
    host_cas: Sequence[str] = (),
) -> list[paramiko.Transport]:
    """Connect, verify and authenticate every hop; the target's transport is last.
    Pinned keys are the target's; a host CA is trusted for every hop (a site's login
    and jump hosts are usually signed by the same CA). On failure every hop opened so
    far is closed again."""
    transports: list[paramiko.Transport] = []
    try:
        for index, endpoint in enumerate(route.hops):
            is_target = index == len(route.hops) - 1
            pinned = pinned_host_keys if is_target else None
            expected = expected_host_keys(endpoint, pinned, host_cas)
            transport = _connect_hop(site, endpoint, expected, transports, options)
            transports.append(transport)
            authenticate(site, transport, endpoint)
            transport.set_keepalive(max(1, int(options.keepalive)))
    except BaseException:
        close_transports(transports)
        raise
    return transports


def close_transports(transports: list[paramiko.Transport]) -> None:
    """Close hops innermost first (closing a jump host first would cut the others)."""
    for transport in reversed(transports):
        transport.close()


def fetch_host_key(
    site: str, route: SshRoute, options: ConnectOptions, key_types: list[str] | None = None
) -> HostKey:
    """The target's host key, read during the key exchange without authenticating to it
    (ProxyJump hops are still verified and authenticated: they carry the connection)."""
    with ssh_errors(site, f"fetching the host key of {route.target.hostname}"):
        jumps = (
            open_route(site, SshRoute(route.jumps[-1], route.jumps[:-1]), None, options)
            if route.jumps
            else []
        )
        try:
            carrier = _dial(route.target, jumps, options)
            transport = start_transport(carrier, options, key_types)
            try:
                return HostKey.from_pkey(transport.get_remote_server_key())
            finally:
                transport.close()
        finally:
            close_transports(jumps)


def authenticate(site: str, transport: paramiko.Transport, endpoint: SshEndpoint) -> None:
    """Public-key authentication with the endpoint's identity files, or else the agent
    and then the default key files, each with its user certificate first. Raises a
    non-transient `SiteUnreachable` naming user@host and every key tried (by path or
    fingerprint; never the key itself), or `CredentialsExpired` (transient) when the
    only thing missing is a certificate that has expired."""
    candidates = candidate_keys(endpoint)
    tried = candidates.tried
    with ssh_errors(site, f"authenticating as {endpoint.address}"):
        for description, key in candidates.keys:
            try:
                transport.auth_publickey(endpoint.user, key)
            except PartialAuthentication as exc:
                raise SiteUnreachable(
                    site,
                    f"{endpoint.address} accepted {description} but also requires "
                    f"{', '.join(exc.allowed_types)}, which hpcfleet cannot answer",
                    transient=False,
                ) from None
            except paramiko.BadAuthenticationType as exc:
                raise SiteUnreachable(
                    site,
                    f"{endpoint.address} does not accept public keys "
                    f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})",
                    transient=False,
                ) from None
            except paramiko.AuthenticationException:
                tried.append(f"{description} (refused)")
                continue
            if transport.is_authenticated():
                log.debug("site %s: logged in to %s with %s", site, endpoint.address, description)
                return
    expired = candidates.latest_expired()
    if expired is not None and expired.certificate.expires is not None:
        raise CredentialsExpired(site, expired.certificate.expires, str(expired.path))
    raise SiteUnreachable(
        site,
        f"authentication failed for {endpoint.address}; tried: "
        + ("; ".join(tried) if tried else "no key (no identity file, ssh-agent or ~/.ssh/id_*)"),
        transient=False,
    )


def _connect_hop(
    site: str,
    endpoint: SshEndpoint,
    expected: ExpectedHostKeys,
    previous: list[paramiko.Transport],
    options: ConnectOptions,
) -> RekeySafeTransport:
    with ssh_errors(site, f"connecting to {endpoint.hostname}:{endpoint.port}"):
        carrier = _dial(endpoint, previous, options)
        algorithms = expected.algorithms()
        try:
            transport = start_transport(carrier, options, algorithms or None)
        except IncompatiblePeer:
            if not algorithms:
                raise
            # The server has no key of the expected type(s): a changed key. Learn what it
            # offers, so that the refusal can show both fingerprints.
            offered = _offered_key(endpoint, previous, options)
            verdict = "CHANGED" if expected.keys else "NOT TRUSTED"
            message = host_key_message(site, endpoint, expected, offered, verdict)
            raise HostKeyRejected(site, message) from None
        try:
            server_key = transport.get_remote_server_key()
            certificate = server_key.public_blob.key_blob if server_key.public_blob else None
            check_host_key(site, endpoint, expected, HostKey.from_pkey(server_key), certificate)
        except BaseException:
            transport.close()
            raise
        return transport


def _offered_key(
    endpoint: SshEndpoint, previous: list[paramiko.Transport], options: ConnectOptions
) -> HostKey:
    transport = start_transport(_dial(endpoint, previous, options), options)
    try:
        return HostKey.from_pkey(transport.get_remote_server_key())
    finally:
        transport.close()


def _dial(
    endpoint: SshEndpoint, previous: list[paramiko.Transport], options: ConnectOptions
) -> Carrier:
    if not previous and endpoint.proxy_command:
        # Tokens in the command were shell-quoted when it was resolved; `shlex.join`
        # only carries the whole line to /bin/sh as one argument (paramiko splits it).
        command = ["/bin/sh", "-c", f"exec {endpoint.proxy_command}"]
        return paramiko.ProxyCommand(shlex.join(command))
    if not previous:
        return open_socket(endpoint, options)
    return previous[-1].open_channel(
        "direct-tcpip",
        dest_addr=(endpoint.hostname, endpoint.port),
        src_addr=("127.0.0.1", 0),
        timeout=options.connect_timeout,
    )


def _prefer(available: Sequence[str], first: tuple[str, ...]) -> list[str]:
    front = [name for name in first if name in available]
    return front + [name for name in available if name not in front]
