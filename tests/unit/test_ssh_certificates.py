"""Host and user certificates made by `ssh-keygen -s`, judged without a network."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from registry.site import SshSettings
from sites.errors import HostKeyRejected
from sites.ssh.certificates import (
    CertificateRejected,
    check_host_certificate,
    parse_certificate,
    read_certificate_file,
)
from sites.ssh.config import SshEndpoint
from sites.ssh.hostkeys import HostKey, check_host_key, expected_host_keys

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def keygen(path: Path, key_type: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True)
    return path


def sign(ca: Path, key: Path, *, principals: str, validity: str, host: bool = True) -> Path:
    """`ssh-keygen -s`: the certificate of `key`, written next to it as KEY-cert.pub."""
    command = ["ssh-keygen", "-q", "-s", str(ca), "-I", "test", "-n", principals, "-V", validity]
    subprocess.run([*command, *(["-h"] if host else []), f"{key}.pub"], check=True)
    return Path(f"{key}-cert.pub")


def blob(public_file: Path) -> bytes:
    return base64.b64decode(public_file.read_text().split()[1])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("certs")
    return {
        name: keygen(directory / name, key_type)
        for name, key_type in (
            ("ca", "ed25519"),
            ("rsa_ca", "rsa"),
            ("other_ca", "ed25519"),
            ("host", "ed25519"),
            ("ecdsa_host", "ecdsa"),
        )
    }


def endpoint(hostname: str = "login01.leonardo.cineca.it") -> SshEndpoint:
    return SshEndpoint(hostname, hostname, 22, "me", (), ())


def test_a_host_certificate_signed_by_the_ca_for_this_host_is_accepted(
    keys: dict[str, Path],
) -> None:
    cert_file = sign(
        keys["ca"],
        keys["host"],
        principals="login01.leonardo.cineca.it,login02",
        validity="-1m:+1h",
    )
    cert = read_certificate_file(cert_file)

    check_host_certificate(cert, [blob(Path(f"{keys['ca']}.pub"))], "login02")

    assert cert.principals == ("login01.leonardo.cineca.it", "login02")
    assert cert.public_key == blob(Path(f"{keys['host']}.pub"))


@pytest.mark.parametrize("ca_name", ["rsa_ca", "ca"])
@pytest.mark.parametrize("host_name", ["ecdsa_host", "host"])
def test_each_key_type_verifies(keys: dict[str, Path], ca_name: str, host_name: str) -> None:
    cert = read_certificate_file(
        sign(keys[ca_name], keys[host_name], principals="h", validity="-1m:+1h")
    )

    check_host_certificate(cert, [blob(Path(f"{keys[ca_name]}.pub"))], "h")


@pytest.mark.parametrize(
    ("principals", "validity", "host", "ca", "reason"),
    [
        ("other.example.org", "-1m:+1h", True, "ca", "not among its principals"),
        ("login01", "-2h:-1h", True, "ca", "expired at"),
        ("login01", "+1h:+2h", True, "ca", "not valid before"),
        ("login01", "-1m:+1h", False, "ca", "user certificate"),
        ("login01", "-1m:+1h", True, "other_ca", "unknown CA"),
    ],
)
def test_a_host_certificate_is_refused_saying_why(
    keys: dict[str, Path], principals: str, validity: str, host: bool, ca: str, reason: str
) -> None:
    cert = read_certificate_file(
        sign(keys[ca], keys["host"], principals=principals, validity=validity, host=host)
    )

    with pytest.raises(CertificateRejected, match=reason):
        check_host_certificate(cert, [blob(Path(f"{keys['ca']}.pub"))], "login01")


def test_a_forged_signature_is_refused(keys: dict[str, Path]) -> None:
    cert_file = sign(keys["ca"], keys["host"], principals="login01", validity="-1m:+1h")
    genuine = blob(cert_file)
    # The same certificate claiming another principal, with the CA's signature kept.
    forged = genuine.replace(b"login01", b"login99")
    cert = parse_certificate(forged)

    with pytest.raises(CertificateRejected, match="signature does not verify"):
        check_host_certificate(cert, [blob(Path(f"{keys['ca']}.pub"))], "login99")


def test_a_truncated_certificate_is_refused(keys: dict[str, Path]) -> None:
    cert_file = sign(keys["ca"], keys["host"], principals="login01", validity="-1m:+1h")

    with pytest.raises(CertificateRejected, match="truncated"):
        parse_certificate(blob(cert_file)[:-40])


def test_the_expiry_of_a_user_certificate_is_read(keys: dict[str, Path]) -> None:
    cert = read_certificate_file(
        sign(keys["ca"], keys["host"], principals="me", validity="-1m:+12h", host=False)
    )

    assert cert.expires is not None
    assert 11.9 * 3600 < cert.expires.timestamp() - time.time() <= 12 * 3600


def test_check_host_key_accepts_a_certificate_of_the_pinned_ca(keys: dict[str, Path]) -> None:
    cert_file = sign(
        keys["ca"], keys["host"], principals="login01.leonardo.cineca.it", validity="-1m:+1h"
    )
    ca_line = Path(f"{keys['ca']}.pub").read_text()
    plain = HostKey.from_line(Path(f"{keys['host']}.pub").read_text())
    expected = expected_host_keys(endpoint(), None, [ca_line])

    check_host_key("leonardo", endpoint(), expected, plain, blob(cert_file))

    with pytest.raises(HostKeyRejected, match=r"NOT TRUSTED.*not among its principals"):
        check_host_key("leonardo", endpoint("login02"), expected, plain, blob(cert_file))
    with pytest.raises(HostKeyRejected, match="UNKNOWN"):
        check_host_key("leonardo", endpoint(), expected, plain)  # no certificate shown


def test_known_hosts_cert_authority_lines_are_honoured(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    cert_file = sign(
        keys["ca"], keys["host"], principals="login01.leonardo.cineca.it", validity="-1m:+1h"
    )
    known_hosts = tmp_path / "known_hosts"
    ca_line = Path(f"{keys['ca']}.pub").read_text().strip()
    known_hosts.write_text(f"@cert-authority *.leonardo.cineca.it {ca_line}\n")
    host = SshEndpoint("leo", "login01.leonardo.cineca.it", 22, "me", (), (known_hosts,))
    plain = HostKey.from_line(Path(f"{keys['host']}.pub").read_text())

    expected = expected_host_keys(host, None)
    check_host_key("leonardo", host, expected, plain, blob(cert_file))

    assert "ssh-ed25519-cert-v01@openssh.com" in expected.algorithms()


def test_several_pinned_keys_each_open_the_door(keys: dict[str, Path]) -> None:
    first = Path(f"{keys['host']}.pub").read_text()
    second = Path(f"{keys['ecdsa_host']}.pub").read_text()
    settings = SshSettings(host="leonardo", host_keys=[first, second])
    expected = expected_host_keys(endpoint(), settings.host_keys)

    for line in (first, second):
        check_host_key("leonardo", endpoint(), expected, HostKey.from_line(line))
    with pytest.raises(HostKeyRejected, match="CHANGED"):
        check_host_key(
            "leonardo",
            endpoint(),
            expected,
            HostKey.from_line(Path(f"{keys['ca']}.pub").read_text()),
        )


def test_site_check_says_how_long_each_user_certificate_is_valid(keys: dict[str, Path]) -> None:
    from datetime import UTC, datetime, timedelta

    from sites.ssh.identities import certificate_checks

    cert_file = sign(keys["ca"], keys["host"], principals="me", validity="-1m:+12h", host=False)
    expires = read_certificate_file(cert_file).expires
    assert expires is not None
    user = SshEndpoint("leo", "leo", 22, "me", (), (), certificate_files=(cert_file,))

    ((ok, detail),) = certificate_checks(user, expires - timedelta(hours=11, minutes=50))
    ((late, late_detail),) = certificate_checks(user, expires + timedelta(seconds=1))

    assert ok and detail == f"{cert_file}: valid until {expires:%Y-%m-%d %H:%M} UTC (12 h left)"
    assert not late and late_detail == f"{cert_file}: expired at {expires:%Y-%m-%d %H:%M} UTC"
    assert certificate_checks(user, datetime.now(UTC))[0][0]


def test_a_certificate_of_an_unknown_ca_leaves_the_pinned_plain_key_to_decide(
    keys: dict[str, Path],
) -> None:
    cert_file = sign(keys["other_ca"], keys["host"], principals="login01", validity="-1m:+1h")
    plain_line = Path(f"{keys['host']}.pub").read_text()
    ca_line = Path(f"{keys['ca']}.pub").read_text()
    plain = HostKey.from_line(plain_line)
    host = endpoint("login01")

    pinned = expected_host_keys(host, [plain_line], [ca_line])
    check_host_key("leonardo", host, pinned, plain, blob(cert_file))  # as OpenSSH: plain key

    ca_only = expected_host_keys(host, None, [ca_line])
    with pytest.raises(HostKeyRejected, match=r"UNKNOWN.*signed by an unknown CA"):
        check_host_key("leonardo", host, ca_only, plain, blob(cert_file))
