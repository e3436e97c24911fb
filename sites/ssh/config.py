"""Resolve a site's `SshSettings` against ~/.ssh/config into the hops to connect through.

OpenSSH semantics, reduced to what hpcfleet uses: `host` may be a `Host` alias whose
`HostName`, `Port`, `User`, `IdentityFile`, `CertificateFile`, `IdentityAgent`,
`ProxyJump`, `ProxyCommand`, `UserKnownHostsFile` and `HostKeyAlias` fill the fields
the site leaves unset; fields set in `SshSettings` win, as options given to `ssh` on
the command line do. A ProxyJump hop is resolved the way `ssh -J` resolves it: the
first hop's own ProxyJump (or ProxyCommand) applies. The config file is read by
`config_file.OpenSshConfig`; the resolution is unit-tested without a network.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from registry import sshnames
from registry.site import SshSettings
from sites.ssh.config_file import (
    HostConfig,
    OpenSshConfig,
    expand_percent,
    final_hostname,
    token_values,
)

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
    certificate_files: tuple[Path, ...] = ()
    proxy_command: str | None = None  # run by /bin/sh; only for the first hop
    identity_agent: str | None = None  # a socket path, "none", or None: $SSH_AUTH_SOCK

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


MAX_JUMP_DEPTH = 8


def load_ssh_config(path: Path | None = None) -> OpenSshConfig:
    """Parse `path` (default ~/.ssh/config). A missing default file is an empty config."""
    if path is None:
        default = DEFAULT_SSH_CONFIG.expanduser()
        return OpenSshConfig.from_path(default) if default.is_file() else OpenSshConfig([])
    return OpenSshConfig.from_path(Path(path).expanduser())


def parse_jump_spec(spec: str) -> tuple[str | None, str, int | None]:
    """Split a ProxyJump entry `[ssh://][user@]host[:port]` into (user, host, port),
    refusing names OpenSSH would refuse (`registry.sshnames`)."""
    return sshnames.parse_jump_spec(spec)


@dataclass(frozen=True)
class _Resolver:
    config: OpenSshConfig
    local_user: str
    site_identity: tuple[Path, ...]
    site_known_hosts: tuple[Path, ...]

    def chain(self, specs: list[str], depth: int = 0) -> list[SshEndpoint]:
        """The hops of a ProxyJump list, as `ssh -J` dials them: the last entry through
        the others; the first entry through its own ProxyJump (or ProxyCommand)."""
        if depth > MAX_JUMP_DEPTH:
            raise ValueError(f"ProxyJump chain longer than {MAX_JUMP_DEPTH} hops (a loop?)")
        *before, last = specs
        user, host, port = parse_jump_spec(last)
        entry = self.config.lookup(host, user=user, port=port, local_user=self.local_user)
        prefix = self.chain(before, depth + 1) if before else self.own_jumps(entry, depth)
        # A hop without its own IdentityFile uses the site's key, else the agent.
        hop = endpoint(host, entry, self, identity=(), fallback_identity=self.site_identity)
        return [*prefix, hop if not prefix else _without_proxy_command(hop)]

    def own_jumps(self, entry: HostConfig, depth: int) -> list[SshEndpoint]:
        specs = jump_specs(entry)
        return self.chain(specs, depth + 1) if specs else []


def resolve_route(
    settings: SshSettings, config: OpenSshConfig, *, local_user: str | None = None
) -> SshRoute:
    """The endpoints to dial for `settings`, with ~/.ssh/config filling unset fields.

    Every name is checked before it reaches `config.lookup`, which runs the config's
    `Match exec` commands, and every name the config supplies is checked before it is
    dialled. A bad one (or a config line OpenSSH would refuse) is a `ValueError`."""
    local_user = local_user or getpass.getuser()
    sshnames.check_host(settings.host, "ssh host")
    if settings.user is not None:
        sshnames.check_user(settings.user, "ssh user")
    resolver = _Resolver(
        config,
        local_user,
        _paths([settings.identity_file]) if settings.identity_file else (),
        _paths([settings.known_hosts]) if settings.known_hosts else (),
    )
    entry = config.lookup(
        settings.host, user=settings.user, port=settings.port, local_user=local_user
    )
    target = endpoint(settings.host, entry, resolver, identity=resolver.site_identity)
    if settings.certificate_file:
        target = replace(target, certificate_files=_paths([settings.certificate_file]))
    if settings.proxy_jump:  # like `ssh -J`: the config's ProxyJump/ProxyCommand give way
        jumps = resolver.chain(list(settings.proxy_jump))
    else:
        jumps = resolver.own_jumps(entry, 0)
    return SshRoute(target=_without_proxy_command(target) if jumps else target, jumps=tuple(jumps))


def jump_specs(entry: HostConfig) -> list[str]:
    """The ProxyJump entries of a looked-up host (`none`: none)."""
    configured = (entry.get("proxyjump") or "").strip()
    if not configured or configured.lower() == "none":
        return []
    return [spec for spec in configured.split(",") if spec.strip()]


def endpoint(
    name: str,
    entry: HostConfig,
    resolver: _Resolver,
    *,
    identity: tuple[Path, ...],
    fallback_identity: tuple[Path, ...] = (),
) -> SshEndpoint:
    """One host as the config describes it (`entry` was looked up with the site's own
    user and port, so those already win)."""
    hostname = sshnames.check_host(final_hostname(entry, name), f"HostName of {name!r}")
    port = sshnames.check_port(entry.get("port") or str(DEFAULT_PORT), f"Port of {name!r}")
    user = sshnames.check_user(entry.get("user") or resolver.local_user, f"User for {name!r}")
    tokens = token_values(entry, hostname, name, resolver.local_user)
    tokens.update(p=str(port), r=user, h=hostname)

    def files(values: Iterable[str]) -> tuple[Path, ...]:
        where = f"ssh config for {name!r}"
        return _paths(expand_percent(v, tokens, where, quote=False) for v in values)

    configured_known_hosts = files(entry.args("userknownhostsfile"))
    return SshEndpoint(
        name=name,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=identity or files(entry.all("identityfile")) or fallback_identity,
        known_hosts_files=(
            resolver.site_known_hosts or configured_known_hosts or _paths(DEFAULT_KNOWN_HOSTS)
        ),
        host_key_alias=entry.get("hostkeyalias"),
        certificate_files=files(entry.all("certificatefile")),
        proxy_command=_proxy_command(entry, tokens, name),
        identity_agent=_identity_agent(entry, tokens, name),
    )


def _proxy_command(entry: HostConfig, tokens: dict[str, str], name: str) -> str | None:
    command = entry.get("proxycommand")
    if command is None or command.strip().lower() == "none":
        return None
    # Each token value is shell-quoted once here; the line then goes to /bin/sh as is.
    return expand_percent(command, tokens, f"ProxyCommand for {name!r}", quote=True)


def _identity_agent(entry: HostConfig, tokens: dict[str, str], name: str) -> str | None:
    agent = entry.get("identityagent")
    if agent is None or agent == "SSH_AUTH_SOCK":
        return None
    if agent.lower() == "none":
        return "none"
    if agent.startswith("$"):
        return os.environ.get(agent[1:].strip("{}")) or "none"
    expanded = expand_percent(agent, tokens, f"IdentityAgent for {name!r}", quote=False)
    return str(Path(expanded).expanduser())


def _without_proxy_command(hop: SshEndpoint) -> SshEndpoint:
    # Reached through the hop before it: its ProxyCommand is not what carries it.
    return replace(hop, proxy_command=None) if hop.proxy_command else hop


def _paths(values: Iterable[str | Path]) -> tuple[Path, ...]:
    return tuple(Path(v).expanduser() for v in values if str(v).strip())
