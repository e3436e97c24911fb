"""`hpcfleet site show NAME --resolved`: the effective SSH connection, like `ssh -G`.

Pure: a resolved `SshRoute` (and the site's pinning) in, a dict (for `--json`) and
`key value` lines out. Paths and fingerprints only; never a key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registry.site import SshSettings
from sites.ssh.config import SshEndpoint, SshRoute
from sites.ssh.hostkeys import HostKey
from sites.ssh.identities import DEFAULT_IDENTITIES, expires_in_words, user_certificates


def resolved_connection(settings: SshSettings, route: SshRoute, now: datetime) -> dict[str, Any]:
    """What hpcfleet will dial for a site: every field `ssh -G` would show that
    hpcfleet uses, the jump chain, and the host-key policy."""
    target = route.target
    certificates, problems = user_certificates(target)
    return {
        "host": settings.host,
        "hostname": target.hostname,
        "port": target.port,
        "user": target.user,
        "identityfile": [str(p) for p in target.identity_files],
        "certificatefile": [
            {
                "path": str(c.path),
                "valid_until": c.certificate.expires.isoformat() if c.certificate.expires else None,
                "state": expires_in_words(c.certificate.expires, now)
                if c.certificate.expires
                else "valid forever",
            }
            for c in certificates
        ]
        + [{"path": str(path), "valid_until": None, "state": why} for path, why in problems],
        "identityagent": target.identity_agent or "$SSH_AUTH_SOCK",
        "proxyjump": [_hop(hop) for hop in route.jumps],
        "proxycommand": route.hops[0].proxy_command,
        "hostkeyalias": target.host_key_alias,
        "userknownhostsfile": [str(p) for p in target.known_hosts_files],
        "hostkeypolicy": host_key_policy(settings, target),
    }


def host_key_policy(settings: SshSettings, target: SshEndpoint) -> dict[str, Any]:
    """Which host keys the target may present (fingerprints), or where they are looked up."""
    pinned = ([settings.host_key] if settings.host_key else []) + list(settings.host_keys)
    keys = [HostKey.from_line(line) for line in dict.fromkeys(pinned)]
    ca = HostKey.from_line(settings.host_ca) if settings.host_ca else None
    return {
        "pinned": [f"{k.key_type} {k.fingerprint}" for k in keys],
        "ca": f"{ca.key_type} {ca.fingerprint}" if ca else None,
        "known_hosts": None
        if keys or ca
        else {"name": target.known_hosts_name, "files": [str(p) for p in target.known_hosts_files]},
    }


def render_resolved(resolved: dict[str, Any]) -> str:
    """`key value` lines, in `ssh -G`'s style (a key repeated for several values)."""
    lines = [f"{key} {resolved[key]}" for key in ("host", "hostname", "port", "user")]
    identities = resolved["identityfile"] or [f"{name} (default)" for name in DEFAULT_IDENTITIES]
    lines += [f"identityfile {path}" for path in identities]
    lines += [f"certificatefile {c['path']} ({c['state']})" for c in resolved["certificatefile"]]
    lines.append(f"identityagent {resolved['identityagent']}")
    if resolved["proxyjump"]:
        lines.append(f"proxyjump {','.join(resolved['proxyjump'])}")
    for key in ("proxycommand", "hostkeyalias"):
        if resolved[key]:
            lines.append(f"{key} {resolved[key]}")
    lines.append(f"userknownhostsfile {' '.join(resolved['userknownhostsfile'])}")
    policy = resolved["hostkeypolicy"]
    lines += [f"hostkey pinned {key}" for key in policy["pinned"]]
    if policy["ca"]:
        lines.append(f"hostkey ca {policy['ca']}")
    if policy["known_hosts"]:
        known = policy["known_hosts"]
        lines.append(f"hostkey known_hosts {known['name']} in {' '.join(known['files'])}")
    return "\n".join(lines)


def _hop(hop: SshEndpoint) -> str:
    return f"{hop.user}@{hop.hostname}:{hop.port}"
