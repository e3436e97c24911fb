"""Host key fingerprints and verification (no network)."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from sites.errors import HostKeyRejected
from sites.ssh.config import SshEndpoint
from sites.ssh.hostkeys import HostKey, check_host_key, expected_host_keys, sha256_fingerprint

# Public keys with the fingerprints `ssh-keygen -lf` printed for them (OpenSSH 9.2).
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbHneZ0fi9aIDt4BDwmag4ucq18eW/lOqNeNqevuaah"
ED25519_FP = "SHA256:ub3HUb3DxMsPrtBofrleKD9E+0lY8McHujPN26d1oJM"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFRuOT9EfbUarBFJ"
    "mScY1LoFMygVvMaH7olAfCcjEAM7b0hdV4M2vxXRe9ntER5JYCkEG3K1nAYfAMkNVG1vD2c="
)
ECDSA_FP = "SHA256:pOhezvMFewsm+mbHTkOYKwmgcKPO2Y4d2aQtij8Jouw"
RSA = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCrrMyOOSNdf8d677ksyUqJRfWNAYwa9sdQYHxPqS+e0wv5EBtOPVsz5"
    "X96MF6XnCpkDd3v2a5FWQX+2fn8N3qaWWbUA6kwtGny3CODbftF4UrQz/x4lhHwYu5WN0zt8BBldB08I+JBcnIco+7D3X"
    "EoWs/5cxmPhuHCS43LknW53/BQAUHJkWHDW1cxWry9Aav6B0BhdZj2umakgWF5nElsxWRfrjAxqCdDXrwe6GAVBVzth192"
    "6wW+94AClfealLfsPFWA2S3riOwXze708g7JNEQJ0snJt9Jr29q9zKiPOJeVX8Axx1ErKN2QGLHLr56WTfPPj4+mIXQEUxy"
    "SMLBr"
)
RSA_FP = "SHA256:Wf/kxAUsYhTG3273NdGBzqIdxgQ8uOw1R+qBOUzsKVU"


def endpoint(known_hosts: tuple[Path, ...] = (), port: int = 2221) -> SshEndpoint:
    return SshEndpoint(
        name="site-a",
        hostname="127.0.0.1",
        port=port,
        user="hpcuser",
        identity_files=(),
        known_hosts_files=known_hosts,
    )


@pytest.mark.parametrize(
    ("line", "fingerprint"), [(ED25519, ED25519_FP), (ECDSA, ECDSA_FP), (RSA, RSA_FP)]
)
def test_fingerprints_match_ssh_keygen(line: str, fingerprint: str) -> None:
    key = HostKey.from_line(line + " comment")

    assert key.fingerprint == fingerprint
    assert sha256_fingerprint(key.blob) == fingerprint
    assert "=" not in fingerprint.removeprefix("SHA256:")


def test_key_line_round_trips() -> None:
    assert HostKey.from_line(ED25519 + " host@example").line == ED25519


def test_a_paramiko_key_gives_the_same_host_key() -> None:
    key = HostKey.from_line(ECDSA)
    pkey = paramiko.PKey.from_type_string(key.key_type, key.blob)

    assert HostKey.from_pkey(pkey) == key


@pytest.mark.parametrize("line", ["ssh-ed25519", "ssh-ed25519 not!base64"])
def test_malformed_key_lines_are_rejected(line: str) -> None:
    with pytest.raises(ValueError):
        HostKey.from_line(line)


def test_the_pinned_key_is_accepted() -> None:
    expected = expected_host_keys(endpoint(), ED25519)

    check_host_key("site-a", endpoint(), expected, HostKey.from_line(ED25519))


def test_a_changed_key_is_refused_with_both_fingerprints() -> None:
    expected = expected_host_keys(endpoint(), ED25519)

    with pytest.raises(HostKeyRejected) as refused:
        check_host_key("site-a", endpoint(), expected, HostKey.from_line(ECDSA))

    message = str(refused.value)
    assert "site 'site-a'" in message
    assert "CHANGED" in message
    assert ED25519_FP in message and ECDSA_FP in message
    assert message.index(ED25519_FP) < message.index(ECDSA_FP)  # expected, then offered
    assert "hpcfleet site trust site-a" in message
    assert refused.value.transient is False


def test_an_unknown_key_is_refused_naming_the_offered_fingerprint(tmp_path: Path) -> None:
    expected = expected_host_keys(endpoint((tmp_path / "missing",)), None)

    with pytest.raises(HostKeyRejected) as refused:
        check_host_key("site-a", endpoint(), expected, HostKey.from_line(ED25519))

    message = str(refused.value)
    assert "UNKNOWN" in message and ED25519_FP in message
    assert "expected none known" in message


def test_known_hosts_entries_match_by_host_and_port(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:2221 {ED25519}\n"
        f"[127.0.0.1]:2222 {ECDSA}\n"
        "@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKbHneZ0fi9aIDt4BDwmag4ucq18\n"
        "[127.0.0.1]:2221 ssh-ed25519 not-base64!\n"
        "# a comment\n"
    )

    site_a = expected_host_keys(endpoint((known_hosts,), port=2221), None)
    site_b = expected_host_keys(endpoint((known_hosts,), port=2222), None)
    port_22 = expected_host_keys(endpoint((known_hosts,), port=22), None)

    assert site_a.keys == (HostKey.from_line(ED25519),)
    assert site_b.keys == (HostKey.from_line(ECDSA),)
    assert port_22.keys == ()


def test_hashed_known_hosts_entries_are_understood(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("[127.0.0.1]:2221")
    known_hosts.write_text(f"{hashed} {RSA}\n")

    expected = expected_host_keys(endpoint((known_hosts,)), None)

    assert expected.keys == (HostKey.from_line(RSA),)
    # An RSA host key is proven with SHA-2 signatures only.
    assert expected.algorithms() == ["rsa-sha2-512", "rsa-sha2-256"]


def test_a_pinned_key_restricts_the_negotiated_algorithm() -> None:
    assert expected_host_keys(endpoint(), ED25519).algorithms() == ["ssh-ed25519"]
    assert expected_host_keys(endpoint(), None).algorithms() == []


def test_known_hosts_patterns_and_negation(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"*.example.org,!bad.example.org,10.0.0.? {ED25519}\n")

    def keys(host: str) -> tuple[HostKey, ...]:
        target = SshEndpoint("x", host, 22, "u", (), (known_hosts,))
        return expected_host_keys(target, None).keys

    assert keys("login.example.org") == (HostKey.from_line(ED25519),)
    assert keys("10.0.0.7") == (HostKey.from_line(ED25519),)
    assert keys("bad.example.org") == ()
    assert keys("10.0.0.17") == ()


def test_a_revoked_key_is_refused_even_when_also_listed(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:2221 {ED25519}\n@revoked * {ED25519}\n")
    expected = expected_host_keys(endpoint((known_hosts,)), None)

    with pytest.raises(HostKeyRejected, match="REVOKED"):
        check_host_key("site-a", endpoint(), expected, HostKey.from_line(ED25519))
