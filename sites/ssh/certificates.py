"""OpenSSH certificates (`*-cert-v01@openssh.com`, PROTOCOL.certkeys): parse and verify.

paramiko negotiates host certificates and can authenticate with a user certificate
(`PKey.load_certificate`), but checks neither: who signed a host certificate, for which
names and until when is decided here. A host certificate is accepted only when its
signature verifies with a trusted CA key, it is a host (not user) certificate, the host
name is one of its principals, the current time is inside its validity window, and it
carries no critical option (none is defined for hosts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paramiko

CERT_SUFFIX = "-cert-v01@openssh.com"
USER_CERTIFICATE, HOST_CERTIFICATE = 1, 2
_PUBLIC_KEY_FIELDS = {"ssh-ed25519": 1, "ssh-rsa": 2}  # ecdsa-sha2-*: 2 (curve, point)
FOREVER = 2**64 - 1


class CertificateRejected(ValueError):
    """A certificate that must not be trusted; the message says why."""


class UnknownAuthority(CertificateRejected):
    """Signed by no trusted CA: OpenSSH then judges the plain key instead."""


@dataclass(frozen=True)
class SshCertificate:
    """The fields of an OpenSSH certificate that decide whether to trust it."""

    key_type: str  # the certified key's type, e.g. "ssh-ed25519"
    public_key: bytes  # the certified key's plain wire-format blob
    serial: int
    kind: int  # USER_CERTIFICATE or HOST_CERTIFICATE
    key_id: str
    principals: tuple[str, ...]
    valid_after: int  # seconds since the epoch
    valid_before: int
    critical_options: bytes
    signature_key: bytes  # the CA's public key blob
    signature: bytes
    signed_data: bytes

    @property
    def expires(self) -> datetime | None:
        """When the certificate stops being valid (None: never)."""
        if self.valid_before >= FOREVER:
            return None
        return datetime.fromtimestamp(self.valid_before, UTC)

    @property
    def signature_key_type(self) -> str:
        return _Reader(self.signature_key).text()

    def signature_valid(self) -> bool:
        """Whether `signature` is the CA key's signature over the certificate."""
        try:
            ca = paramiko.PKey.from_type_string(self.signature_key_type, self.signature_key)
            return bool(ca.verify_ssh_sig(self.signed_data, paramiko.Message(self.signature)))
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            return False


def parse_certificate(blob: bytes) -> SshCertificate:
    """Split a certificate blob into its fields (no trust decision); a malformed one is
    a `CertificateRejected`."""
    reader = _Reader(blob)
    try:
        cert_type = reader.text()
        if not cert_type.endswith(CERT_SUFFIX):
            raise CertificateRejected(f"{cert_type!r} is not a certificate type")
        key_type = cert_type.removesuffix(CERT_SUFFIX)
        reader.string()  # nonce
        fields = [reader.string() for _ in range(_PUBLIC_KEY_FIELDS.get(key_type, 2))]
        public_key = _string(key_type.encode()) + b"".join(_string(f) for f in fields)
        serial, kind = reader.uint64(), reader.uint32()
        key_id, principals = reader.text(), _Reader(reader.string()).all_texts()
        valid_after, valid_before = reader.uint64(), reader.uint64()
        critical_options = reader.string()
        reader.string()  # extensions
        reader.string()  # reserved
        signature_key = reader.string()
        signed_length = reader.offset
        signature = reader.string()
    except (IndexError, UnicodeDecodeError):
        raise CertificateRejected("the certificate is truncated or malformed") from None
    return SshCertificate(
        key_type,
        public_key,
        serial,
        kind,
        key_id,
        principals,
        valid_after,
        valid_before,
        critical_options,
        signature_key,
        signature,
        blob[:signed_length],
    )


def check_host_certificate(
    cert: SshCertificate, authorities: list[bytes], host: str, *, now: float | None = None
) -> None:
    """Raise `CertificateRejected` (saying why) unless `cert` certifies `host`, signed by
    one of `authorities` (CA public key blobs), and is valid at `now`."""
    if cert.kind != HOST_CERTIFICATE:
        raise CertificateRejected("it is a user certificate, not a host certificate")
    if cert.signature_key not in authorities:
        raise UnknownAuthority(f"it is signed by an unknown CA ({_fingerprint(cert)})")
    if not cert.signature_valid():
        raise CertificateRejected("its signature does not verify with the CA key")
    if host not in cert.principals:
        shown = ", ".join(cert.principals) or "none"
        raise CertificateRejected(f"{host!r} is not among its principals ({shown})")
    check_validity(cert, now=now)
    if cert.critical_options:
        raise CertificateRejected("it carries critical options, which no host certificate may")


def check_validity(cert: SshCertificate, *, now: float | None = None) -> None:
    """Raise `CertificateRejected` unless `now` is inside the validity window."""
    moment = time.time() if now is None else now
    if moment < cert.valid_after:
        start = datetime.fromtimestamp(cert.valid_after, UTC)
        raise CertificateRejected(f"it is not valid before {start:%Y-%m-%d %H:%M:%S} UTC")
    if moment >= cert.valid_before:
        raise CertificateRejected(f"it expired at {cert.expires:%Y-%m-%d %H:%M:%S} UTC")


def read_certificate_file(path: Path) -> SshCertificate:
    """A `*-cert.pub` file (`TYPE BASE64 [comment]`); `OSError`/`CertificateRejected`."""
    fields = path.expanduser().read_text().split()
    if len(fields) < 2 or not fields[0].endswith(CERT_SUFFIX):
        raise CertificateRejected(f"{path} is not an OpenSSH certificate")
    try:
        return parse_certificate(base64.b64decode(fields[1], validate=True))
    except binascii.Error:
        raise CertificateRejected(f"{path} is not valid base64") from None


def _fingerprint(cert: SshCertificate) -> str:
    digest = base64.b64encode(hashlib.sha256(cert.signature_key).digest()).decode()
    return f"{cert.signature_key_type} SHA256:{digest.rstrip('=')}"


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


class _Reader:
    """SSH wire format (RFC 4251): uint32, uint64 and length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise IndexError("truncated")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def uint64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        return self.string().decode("utf-8")

    def all_texts(self) -> tuple[str, ...]:
        texts = []
        while self.offset < len(self.data):
            texts.append(self.text())
        return tuple(texts)
