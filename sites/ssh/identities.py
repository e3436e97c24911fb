"""The keys to offer when logging in: identity files, the ssh-agent, user certificates.

As OpenSSH does, a key with a certificate (`CertificateFile`, the site's
`certificate_file`, or `KEY-cert.pub` next to an identity file) is offered with the
certificate first, then as a plain key. A certificate that has expired is not offered;
it is remembered, so that a refused login can say "credentials expired at T" (and wait
for their renewal) instead of "authentication failed".
"""

from __future__ import annotations

import copy
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import paramiko

from sites.ssh.certificates import (
    CertificateRejected,
    SshCertificate,
    check_validity,
    read_certificate_file,
)
from sites.ssh.config import SshEndpoint

# Default identity files tried (after the agent), as OpenSSH does.
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_CERT_FILE_SUFFIX = "-cert.pub"


@dataclass(frozen=True)
class UserCertificate:
    path: Path
    certificate: SshCertificate


@dataclass
class Candidates:
    """Keys to offer, each with a description safe to show (a path or a fingerprint,
    never the key), and what was skipped and why."""

    keys: list[tuple[str, paramiko.PKey]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    expired: list[UserCertificate] = field(default_factory=list)

    def latest_expired(self) -> UserCertificate | None:
        return max(self.expired, key=lambda c: c.certificate.valid_before, default=None)


def candidate_keys(endpoint: SshEndpoint) -> Candidates:
    """The endpoint's identity files, or else the agent and the default key files, each
    preceded by its certificate when one is valid now."""
    found = Candidates()
    certificates = _valid_certificates(endpoint, found)
    plain: list[tuple[str, paramiko.PKey]] = []
    if endpoint.identity_files:
        plain = [k for path in endpoint.identity_files if (k := _load_key(path, found.tried))]
        plain = plain or _agent_keys(endpoint, found.tried)
    else:
        plain = _agent_keys(endpoint, found.tried) + [
            k for name in DEFAULT_IDENTITIES if (k := _load_key(Path(name).expanduser(), None))
        ]
    plain += _keys_of_certificates(endpoint, plain, found.tried)
    for description, key in plain:
        for user_cert in certificates:
            if user_cert.certificate.public_key == key.asbytes():
                found.keys.append(_with_certificate(description, key, user_cert))
        found.keys.append((description, key))
    return found


def certificate_files(endpoint: SshEndpoint) -> list[Path]:
    """Where the endpoint's user certificates are: explicit ones first, then
    `KEY-cert.pub` next to each identity file (only those that exist)."""
    paths = list(endpoint.certificate_files)
    keys = endpoint.identity_files or tuple(Path(n).expanduser() for n in DEFAULT_IDENTITIES)
    paths += [p for k in keys if (p := Path(f"{k}{_CERT_FILE_SUFFIX}")).is_file()]
    return list(dict.fromkeys(paths))


def user_certificates(
    endpoint: SshEndpoint,
) -> tuple[list[UserCertificate], list[tuple[Path, str]]]:
    """The endpoint's readable user certificates, and (path, why) for unreadable ones."""
    readable, problems = [], []
    for path in certificate_files(endpoint):
        try:
            readable.append(UserCertificate(path, read_certificate_file(path)))
        except (OSError, CertificateRejected) as exc:
            problems.append((path, _reason(exc)))
    return readable, problems


def certificate_checks(endpoint: SshEndpoint, now: datetime) -> list[tuple[bool, str]]:
    """(ok, `PATH: valid until T (N h left)`) for each user certificate of `endpoint`,
    for `site check`; an expired or unreadable one is not ok."""
    readable, problems = user_certificates(endpoint)
    checks = [(False, f"{path}: {reason}") for path, reason in problems]
    for user_cert in readable:
        expires = user_cert.certificate.expires
        if expires is None:
            checks.append((True, f"{user_cert.path}: valid forever"))
        else:
            words = expires_in_words(expires, now)
            checks.append((expires > now, f"{user_cert.path}: {words}"))
    return checks


def _valid_certificates(endpoint: SshEndpoint, found: Candidates) -> list[UserCertificate]:
    readable, problems = user_certificates(endpoint)
    found.tried += [f"certificate {path} ({reason})" for path, reason in problems]
    valid = []
    for user_cert in readable:
        try:
            check_validity(user_cert.certificate)
        except CertificateRejected as exc:
            found.tried.append(f"certificate {user_cert.path} ({exc})")
            if user_cert.certificate.expires is not None and "expired" in str(exc):
                found.expired.append(user_cert)
            continue
        valid.append(user_cert)
    return valid


def _keys_of_certificates(
    endpoint: SshEndpoint, loaded: list[tuple[str, paramiko.PKey]], tried: list[str]
) -> list[tuple[str, paramiko.PKey]]:
    """The private key `KEY` of each explicit `KEY-cert.pub` not loaded already."""
    have = {key.asbytes() for _, key in loaded}
    extra = []
    for path in endpoint.certificate_files:
        if not path.name.endswith(_CERT_FILE_SUFFIX):
            continue
        key_path = path.with_name(path.name.removesuffix(_CERT_FILE_SUFFIX))
        entry = _load_key(key_path, tried) if key_path.is_file() else None
        if entry is not None and entry[1].asbytes() not in have:
            extra.append(entry)
    return extra


def _with_certificate(
    description: str, key: paramiko.PKey, user_cert: UserCertificate
) -> tuple[str, paramiko.PKey]:
    # load_certificate changes the key it is called on; the plain key is offered after.
    if isinstance(key, paramiko.AgentKey):  # copy.copy recurses in its __getattr__
        certified: paramiko.PKey = paramiko.AgentKey(key.agent, key.blob, key.comment)
    else:
        certified = copy.copy(key)
    certified.load_certificate(str(user_cert.path))
    until = user_cert.certificate.expires
    valid = f", valid until {until:%Y-%m-%d %H:%M} UTC" if until else ""
    return f"{description} with certificate {user_cert.path}{valid}", certified


def _load_key(path: Path, tried: list[str] | None) -> tuple[str, paramiko.PKey] | None:
    description = f"identity file {path}"
    try:
        return description, paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError):
        # paramiko 5 lets cryptography's TypeError ("password-protected") through.
        reason = "encrypted; load it into the ssh-agent or use a key without passphrase"
    except FileNotFoundError:
        reason = "not found"
    except (OSError, paramiko.SSHException, ValueError) as exc:
        reason = f"unreadable: {type(exc).__name__}"
    if tried is not None:
        tried.append(f"{description} ({reason})")
    return None


def _agent_keys(endpoint: SshEndpoint, tried: list[str]) -> list[tuple[str, paramiko.PKey]]:
    if endpoint.identity_agent == "none":
        return []
    try:
        keys = _agent(endpoint.identity_agent).get_keys()
    except (paramiko.SSHException, OSError):
        keys = ()
    if not keys:
        where = endpoint.identity_agent or "$SSH_AUTH_SOCK"
        tried.append(f"ssh-agent at {where} (not running or holds no keys)")
    return [(f"ssh-agent key {k.fingerprint}", k) for k in keys]


def _agent(socket_path: str | None) -> paramiko.agent.AgentSSH:
    """The agent at `socket_path` (IdentityAgent), or the one $SSH_AUTH_SOCK names."""
    if socket_path is None:
        return paramiko.Agent()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError:
        connection.close()
        raise
    agent = paramiko.agent.AgentSSH()
    agent._connect(connection)  # type: ignore[attr-defined]  # no public way to name it
    return agent


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "not found"
    return str(exc) if isinstance(exc, CertificateRejected) else type(exc).__name__


def expires_in_words(expires: datetime, now: datetime) -> str:
    """`valid until 2026-12-02 10:00 UTC (11 h left)` or `expired at ...`."""
    if expires <= now:
        return f"expired at {expires:%Y-%m-%d %H:%M} UTC"
    hours = (expires - now).total_seconds() / 3600
    left = f"{hours:.0f} h left" if hours >= 1 else f"{hours * 60:.0f} min left"
    return f"valid until {expires:%Y-%m-%d %H:%M} UTC ({left})"
