"""Host key verification: pinned keys, a host CA or a known_hosts file, never trust on
first use.

The check runs after the key exchange and before authentication, so nothing (not even
the user name's proof) reaches a server whose key is unknown or changed. A site may pin
several keys (`host_keys`: round-robin login nodes each have their own) and may trust a
host CA (`host_ca`, or `@cert-authority` lines of known_hosts): then a server's host
certificate is accepted when `certificates.check_host_certificate` accepts it. A
certificate signed by no trusted CA is judged by its plain key, as OpenSSH does.
Fingerprints are printed the way OpenSSH prints them (`SHA256:` + unpadded base64), so
a user can compare them with `ssh-keygen -lf` or with what the site's admins publish.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from sites.errors import HostKeyRejected
from sites.ssh.certificates import (
    CERT_SUFFIX,
    CertificateRejected,
    UnknownAuthority,
    check_host_certificate,
    parse_certificate,
)
from sites.ssh.config import SshEndpoint

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
    revoked: tuple[HostKey, ...] = ()
    authorities: tuple[HostKey, ...] = ()  # host CAs

    def algorithms(self) -> list[str]:
        """Host key algorithms to offer so the server proves one of `keys` (or shows a
        certificate, first, when a CA is trusted), in the preference order of paramiko.
        Empty when nothing is known (offer everything)."""
        wanted = {alg for k in self.keys for alg in _ALGORITHMS_FOR_KEY_TYPE.get(k.key_type, ())}
        plain = [alg for alg in HOST_KEY_ALGORITHMS if alg in wanted]
        if not self.authorities:
            return plain
        return [alg + CERT_SUFFIX for alg in HOST_KEY_ALGORITHMS] + plain

    def describe_expected(self) -> str:
        shown = [f"{k.key_type} {k.fingerprint}" for k in self.keys]
        shown += [f"a certificate signed by CA {k.fingerprint}" for k in self.authorities]
        if not shown:
            return f"none known ({self.source})"
        return f"{' or '.join(shown)} ({self.source})"


def sha256_fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: `SHA256:` + base64 without padding."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def expected_host_keys(
    endpoint: SshEndpoint,
    pinned: str | Sequence[str] | None,
    authorities: Sequence[str] = (),
) -> ExpectedHostKeys:
    """What `endpoint` must present: a pinned key or a certificate of a pinned CA if any
    is given, else what its known_hosts files say (keys and `@cert-authority` lines)."""
    pinned_lines = [pinned] if isinstance(pinned, str) else list(pinned or ())
    cas = tuple(HostKey.from_line(line) for line in authorities)
    if pinned_lines or cas:
        keys = tuple(dict.fromkeys(HostKey.from_line(line) for line in pinned_lines))
        what = " and ".join(
            name for name, given in (("host keys", keys), ("host CA", cas)) if given
        )
        return ExpectedHostKeys(keys, f"pinned {what}", authorities=cas)
    return _known_hosts_expectation(endpoint)


def _known_hosts_expectation(endpoint: SshEndpoint) -> ExpectedHostKeys:
    name = endpoint.known_hosts_name
    keys: list[HostKey] = []
    revoked: list[HostKey] = []
    cas: list[HostKey] = []
    readable = []
    for path in endpoint.known_hosts_files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        readable.append(str(path))
        accepted, refused = known_hosts_keys(text, name)
        keys += [k for k in accepted if k not in keys]
        revoked += refused
        cas += [k for k in known_hosts_authorities(text, name) if k not in cas]
    files = ", ".join(readable) if readable else "no known_hosts file found"
    source = f"known_hosts entry for {name!r} in {files}"
    if not keys and not cas:
        source = f"no pinned host_key and no entry for {name!r} in {files}"
    return ExpectedHostKeys(
        tuple(k for k in keys if k not in revoked),
        source,
        tuple(revoked),
        tuple(k for k in cas if k not in revoked),
    )


def check_host_key(
    site: str,
    endpoint: SshEndpoint,
    expected: ExpectedHostKeys,
    offered: HostKey,
    certificate: bytes | None = None,
) -> None:
    """Raise `HostKeyRejected` unless `offered` is one of the expected keys, or comes
    with a `certificate` that a trusted host CA signed for this host. As in OpenSSH, a
    certificate of an unknown CA leaves the plain key to be judged; one of a trusted CA
    that is invalid (expired, other principals) is refused."""
    problem = None
    if certificate is not None and expected.authorities:
        try:
            cert = parse_certificate(certificate)
            name = endpoint.host_key_alias or endpoint.hostname
            check_host_certificate(cert, [ca.blob for ca in expected.authorities], name)
        except UnknownAuthority as exc:
            problem = str(exc)
        except CertificateRejected as exc:
            message = host_key_message(site, endpoint, expected, offered, "NOT TRUSTED")
            raise HostKeyRejected(site, f"{message}. Its host certificate: {exc}") from None
        else:
            if offered not in expected.revoked:
                return
    if offered in expected.keys:
        return
    verdict = (
        "REVOKED" if offered in expected.revoked else "CHANGED" if expected.keys else "UNKNOWN"
    )
    message = host_key_message(site, endpoint, expected, offered, verdict)
    if problem:
        message += f". Its host certificate: {problem}"
    raise HostKeyRejected(site, message)


def host_key_message(
    site: str, endpoint: SshEndpoint, expected: ExpectedHostKeys, offered: HostKey, verdict: str
) -> str:
    """The refusal text: both fingerprints, and what to do about it."""
    trust = f"`hpcfleet site trust {site}`"
    advice = {
        "CHANGED": f"if the site's admins confirm the new key, run {trust} to pin it",
        "UNKNOWN": f"compare it with the fingerprint the site publishes, then run {trust}",
    }.get(verdict, "ask the site's admins")
    return (
        f"host key of {endpoint.hostname}:{endpoint.port} is {verdict}: "
        f"expected {expected.describe_expected()}; "
        f"the server offered {offered.key_type} {offered.fingerprint}. "
        f"The connection was refused; {advice}"
    )


def known_hosts_keys(text: str, name: str) -> tuple[list[HostKey], list[HostKey]]:
    """(accepted, revoked) keys for host `name` in known_hosts `text`. Hashed names and
    `*`/`?`/`!` patterns are understood; @cert-authority lines and lines that cannot
    be parsed are skipped (one bad line must not hide the others)."""
    accepted: list[HostKey] = []
    revoked: list[HostKey] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if len(fields) < 3 or marker not in (None, "@revoked"):
            continue
        if not _host_matches(fields[0], name):
            continue
        try:
            key = HostKey.from_line(f"{fields[1]} {fields[2]}")
        except ValueError:
            continue
        (revoked if marker else accepted).append(key)
    return accepted, revoked


def known_hosts_authorities(text: str, name: str) -> list[HostKey]:
    """The `@cert-authority` keys of known_hosts `text` that apply to host `name`."""
    authorities = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "@cert-authority" or not _host_matches(fields[1], name):
            continue
        try:
            authorities.append(HostKey.from_line(f"{fields[2]} {fields[3]}"))
        except ValueError:
            continue
    return authorities


def _host_matches(patterns: str, name: str) -> bool:
    if patterns.startswith("|1|"):
        salt, _, digest = patterns[3:].partition("|")
        try:
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        regex = ".*".join(
            ".".join(map(re.escape, part.split("?"))) for part in pattern.lstrip("!").split("*")
        )
        if re.fullmatch(regex, name, re.IGNORECASE):
            if negated:
                return False
            matched = True
    return matched
