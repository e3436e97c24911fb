"""Host key verification: a pinned key or a known_hosts file, never trust on first use.

The check runs after the key exchange and before authentication, so nothing (not even
the user name's proof) reaches a server whose key is unknown or changed. Fingerprints
are printed the way OpenSSH prints them (`SHA256:` + unpadded base64), so a user can
compare them with `ssh-keygen -lf` or with what the site's admins publish.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

import paramiko

from sites.errors import HostKeyRejected
from sites.ssh_config import SshEndpoint

# Host key algorithms that prove possession of a key of each type. OpenSSH >= 8.8 no
# longer signs with SHA-1 ("ssh-rsa"), so an RSA host key is negotiated as rsa-sha2-*.
_ALGORITHMS_FOR_KEY_TYPE = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
# paramiko's own order of preference.
HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


@dataclass(frozen=True)
class HostKey:
    """A public host key: its type name and its wire-format blob."""

    key_type: str
    blob: bytes

    @property
    def fingerprint(self) -> str:
        return sha256_fingerprint(self.blob)

    @property
    def line(self) -> str:
        """The `type base64` form used by `host_key:` and known_hosts."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"

    @classmethod
    def from_line(cls, line: str) -> HostKey:
        """Parse `ssh-ed25519 AAAA...` (a trailing comment is ignored)."""
        parts = line.split()
        if len(parts) < 2:
            raise ValueError("a host key line is 'TYPE BASE64'")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"host key is not valid base64: {exc}") from None
        return cls(parts[0], blob)

    @classmethod
    def from_pkey(cls, key: paramiko.PKey) -> HostKey:
        return cls(key.get_name(), key.asbytes())


@dataclass(frozen=True)
class ExpectedHostKeys:
    """The keys a host may present, and where that knowledge came from (for messages)."""

    keys: tuple[HostKey, ...]
    source: str

    def algorithms(self) -> list[str]:
        """Host key algorithms to offer so the server proves one of `keys`, in the
        preference order of paramiko. Empty when nothing is known (offer everything)."""
        wanted = {alg for k in self.keys for alg in _ALGORITHMS_FOR_KEY_TYPE.get(k.key_type, ())}
        return [alg for alg in HOST_KEY_ALGORITHMS if alg in wanted]

    def describe_expected(self) -> str:
        if not self.keys:
            return f"none known ({self.source})"
        shown = ", ".join(f"{k.key_type} {k.fingerprint}" for k in self.keys)
        return f"{shown} ({self.source})"


def sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: `SHA256:` + base64 without padding."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def expected_host_keys(endpoint: SshEndpoint, pinned: str | None) -> ExpectedHostKeys:
    """What `endpoint` must present: the pinned key if any, else its known_hosts entries."""
    if pinned:
        return ExpectedHostKeys((HostKey.from_line(pinned),), "pinned host_key")
    name = endpoint.known_hosts_name
    keys: list[HostKey] = []
    readable = []
    for path in endpoint.known_hosts_files:
        if not path.is_file():
            continue
        readable.append(str(path))
        for key in _known_hosts_lookup(path, name):
            if key not in keys:
                keys.append(key)
    files = ", ".join(readable) if readable else "no known_hosts file found"
    if keys:
        return ExpectedHostKeys(tuple(keys), f"known_hosts entry for {name!r} in {files}")
    return ExpectedHostKeys((), f"no pinned host_key and no entry for {name!r} in {files}")


def check_host_key(
    site: str, endpoint: SshEndpoint, expected: ExpectedHostKeys, offered: HostKey
) -> None:
    """Raise `HostKeyRejected` unless `offered` is one of the expected keys."""
    if offered in expected.keys:
        return
    verdict = "CHANGED" if expected.keys else "UNKNOWN"
    raise HostKeyRejected(site, host_key_message(site, endpoint, expected, offered, verdict))


def host_key_message(
    site: str, endpoint: SshEndpoint, expected: ExpectedHostKeys, offered: HostKey, verdict: str
) -> str:
    """The refusal text: both fingerprints, and what to do about it."""
    trust = f"`hpcfleet site trust {site}`"
    advice = (
        f"if the site's admins confirm the new key, run {trust} to pin it"
        if verdict == "CHANGED"
        else f"compare it with the fingerprint the site publishes, then run {trust}"
    )
    return (
        f"host key of {endpoint.hostname}:{endpoint.port} is {verdict}: "
        f"expected {expected.describe_expected()}; "
        f"the server offered {offered.key_type} {offered.fingerprint}. "
        f"The connection was refused; {advice}"
    )


def _known_hosts_lookup(path: Path, name: str) -> list[HostKey]:
    """Keys for `name` in one known_hosts file (hashed entries included)."""
    try:
        host_keys = paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException):
        return []
    found = host_keys.lookup(name)
    if not found:
        return []
    return [HostKey.from_pkey(found[key_type]) for key_type in found]
