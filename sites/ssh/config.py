"""Resolve a site's `SshSettings` against ~/.ssh/config into the hops to connect through.

OpenSSH semantics, reduced to what hpcfleet uses: `host` may be a `Host` alias whose
`HostName`, `Port`, `User`, `IdentityFile`, `ProxyJump`, `UserKnownHostsFile` and
`HostKeyAlias` fill the fields the site leaves unset; fields set in `SshSettings` win.
Pure apart from reading the config file: the resolution itself takes a parsed
`paramiko.SSHConfig` and is unit-tested without a network.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from registry import sshnames
from registry.site import SshSettings

DEFAULT_PORT = 22
DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = (Path("~/.ssh/known_hosts"), Path("~/.ssh/known_hosts2"))


@dataclass(frozen=True)
class SshEndpoint:
    """One machine to log in to: the target or a ProxyJump hop."""

    name: str  # as the user wrote it (alias or host), for messages
    hostname: str  # what is actually dialled
    port: int
    user: str
    identity_files: tuple[Path, ...]  # empty: use the ssh-agent (then default key files)
    known_hosts_files: tuple[Path, ...]
    host_key_alias: str | None = None

    @property
    def address(self) -> str:
        """`user@host:port`, the form used in error messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host has in a known_hosts file (OpenSSH's `[host]:port` rule)."""
        name = self.host_key_alias or self.hostname
        return name if self.port == DEFAULT_PORT or self.host_key_alias else f"[{name}]:{self.port}"


@dataclass(frozen=True)
class SshRoute:
    """The target and the ProxyJump hops in front of it, first hop first."""

    target: SshEndpoint
    jumps: tuple[SshEndpoint, ...] = ()

    @property
    def hops(self) -> tuple[SshEndpoint, ...]:
        """Every endpoint in dialling order, the target last."""
        return (*self.jumps, self.target)


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig:
    """Parse `path` (default ~/.ssh/config). A missing default file is an empty config."""
    if path is None:
        default = DEFAULT_SSH_CONFIG.expanduser()
        return (
            paramiko.SSHConfig.from_path(str(default))
            if default.is_file()
            else paramiko.SSHConfig()
        )
    return paramiko.SSHConfig.from_path(str(Path(path).expanduser()))


def parse_jump_spec(spec: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump entry `[ssh://][user@]host[:port]` into (user, host, port),
    refusing names OpenSSH would refuse (`registry.sshnames`)."""
    return sshnames.parse_jump_spec(spec)


def resolve_route(
    settings: SshSettings, config: paramiko.SSHConfig, *, local_user: str | None = None
) -> SshRoute:
    """The endpoints to dial for `settings`, with ~/.ssh/config filling unset fields.

    Every name is checked before it reaches `config.lookup`, which runs the config's
    `Match exec` commands with `%h`/`%n` expanded unquoted into a shell, and every name
    the config supplies is checked before it is dialled. A bad one is a `ValueError`."""
    local_user = local_user or getpass.getuser()
    sshnames.check_host(settings.host, "ssh host")
    if settings.user is not None:
        sshnames.check_user(settings.user, "ssh user")
    own_jumps = [parse_jump_spec(spec) for spec in settings.proxy_jump]
    entry = config.lookup(settings.host)
    own_known_hosts = _paths([settings.known_hosts]) if settings.known_hosts else ()
    own_identity = _paths([settings.identity_file]) if settings.identity_file else ()
    target = _endpoint(
        settings.host,
        entry,
        user=settings.user,
        port=settings.port,
        identity=own_identity,
        known_hosts=own_known_hosts,
        local_user=local_user,
    )
    if own_jumps:
        jump_hops = own_jumps
    else:
        configured = str(entry.get("proxyjump", "")).strip()
        none = not configured or configured.lower() == "none"
        specs = [] if none else [s for s in configured.split(",") if s.strip()]
        jump_hops = [parse_jump_spec(spec) for spec in specs]
    jumps = []
    for user, host, port in jump_hops:
        jumps.append(
            _endpoint(
                host,
                config.lookup(host),
                user=user,
                port=port,
                # A hop without its own IdentityFile uses the site's key, else the agent.
                identity=(),
                fallback_identity=own_identity,
                known_hosts=own_known_hosts,
                local_user=local_user,
            )
        )
    return SshRoute(target=target, jumps=tuple(jumps))


def _endpoint(
    name: str,
    entry: paramiko.SSHConfigDict,
    *,
    user: str | None,
    port: int | None,
    identity: tuple[Path, ...],
    known_hosts: tuple[Path, ...],
    local_user: str,
    fallback_identity: tuple[Path, ...] = (),
) -> SshEndpoint:
    configured_identity = _paths(entry.get("identityfile", []))
    configured_known_hosts = _paths(str(entry.get("userknownhostsfile", "")).split())
    hostname = sshnames.check_host(str(entry.get("hostname", name)), f"HostName of {name!r}")
    configured_port = str(entry.get("port", DEFAULT_PORT))
    return SshEndpoint(
        name=name,
        hostname=hostname,
        port=port or sshnames.check_port(configured_port, f"Port of {name!r}"),
        user=sshnames.check_user(user or str(entry.get("user", local_user)), f"User for {name!r}"),
        identity_files=identity or configured_identity or fallback_identity,
        known_hosts_files=known_hosts or configured_known_hosts or _paths(DEFAULT_KNOWN_HOSTS),
        host_key_alias=entry.get("hostkeyalias"),
    )


def _paths(values: Iterable[str | Path]) -> tuple[Path, ...]:
    return tuple(Path(v).expanduser() for v in values if str(v).strip())
