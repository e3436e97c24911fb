"""Certificates against a real sshd: a host certificate (`HostCertificate`) checked
against `ssh.host_ca`, and a short-lived user certificate (`TrustedUserCAKeys`, no
authorized_keys at all) that expires during the test and is then renewed.

The sshd is this test's own (own port on 127.0.0.1, own temporary config), not the
shared sandbox's.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.site import SshSettings
from sites.errors import CredentialsExpired, HostKeyRejected, SiteUnreachable
from sites.ssh import transport as transport_module
from sites.ssh.certificates import read_certificate_file
from sites.ssh.resolved import render_resolved
from sites.ssh.transport import (
    ConnectionPool,
    SshTransport,
    certificate_checks,
    fetch_host_keys,
    resolved_connection,
)

SSHD = Path("/usr/sbin/sshd")
SIGN = ("ssh-keygen", "-q", "-s")
PRINCIPALS = "127.0.0.1,login01.test"  # what the host certificate is valid for
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not SSHD.exists() or shutil.which("ssh-keygen") is None, reason="needs sshd, ssh-keygen"
    ),
]


@dataclass(frozen=True)
class CertSshd:
    port: int
    user: str
    directory: Path
    host_ca: str  # "ssh-ed25519 AAAA..." of the CA that signed the host certificate
    host_key: str  # the plain host key
    user_ca: Path
    user_key: Path

    def sign_user(self, validity: str) -> Path:
        """A certificate for the user's key, valid for `validity` (ssh-keygen -V)."""
        subprocess.run(
            [
                *SIGN,
                str(self.user_ca),
                "-I",
                "test-user",
                "-n",
                self.user,
                "-V",
                validity,
                self.pub,
            ],
            check=True,
        )
        return Path(f"{self.user_key}-cert.pub")

    @property
    def pub(self) -> str:
        return f"{self.user_key}.pub"

    def settings(self, **overrides: object) -> SshSettings:
        fields: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.user_key),
            "certificate_file": f"{self.user_key}-cert.pub",
            "host_ca": self.host_ca,
        }
        fields.update(overrides)
        return SshSettings.model_validate(fields)


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _await_port(listen: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited at start: {log.read_text()}")
        try:
            socket.create_connection((listen, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")


def start_sshd(
    directory: Path, listen: str, port: int, extra: str, user: str | None = None
) -> subprocess.Popen[bytes]:
    """This test's own sshd (never the shared sandbox's), key logins for `user` only
    (default: whoever runs the test)."""
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {listen}\nAllowUsers {user or getpass.getuser()}\n{extra}"
        f"PermitRootLogin prohibit-password\nPidFile {directory}/sshd.pid\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nUseDNS no\n"
    )
    log = directory / "sshd.log"
    process = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)])
    try:
        _await_port(listen, port, process, log)
    except BaseException:
        _stop(process)
        raise
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def cert_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertSshd]:
    directory = tmp_path_factory.mktemp("cert-sshd")
    host_ca, user_ca = _keygen(directory / "host_ca"), _keygen(directory / "user_ca")
    host_key, user_key = _keygen(directory / "host_key"), _keygen(directory / "id_ed25519")
    subprocess.run(
        [
            *SIGN,
            str(host_ca),
            "-I",
            "h",
            "-h",
            "-n",
            PRINCIPALS,
            "-V",
            "-5m:+1h",
            f"{host_key}.pub",
        ],
        check=True,
    )
    port = _free_port()
    process = start_sshd(
        directory,
        "127.0.0.1",
        port,
        f"HostKey {host_key}\nHostCertificate {host_key}-cert.pub\n"
        f"TrustedUserCAKeys {user_ca}.pub\nAuthorizedKeysFile none\n",
    )
    try:
        yield CertSshd(
            port,
            getpass.getuser(),
            directory,
            Path(f"{host_ca}.pub").read_text().strip(),
            " ".join(Path(f"{host_key}.pub").read_text().split()[:2]),
            user_ca,
            user_key,
        )
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def second_login_node(
    cert_sshd: CertSshd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Another login node behind the same name (127.0.0.2, same port), with its own host
    key and no certificate; returns that key's line."""
    directory = tmp_path_factory.mktemp("login02")
    host_key = _keygen(directory / "host_key")
    process = start_sshd(
        directory,
        "127.0.0.2",
        cert_sshd.port,
        f"HostKey {host_key}\nTrustedUserCAKeys {cert_sshd.user_ca}.pub\nAuthorizedKeysFile none\n",
    )
    try:
        yield " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    finally:
        _stop(process)


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    connections = ConnectionPool()
    yield connections
    connections.close_all()


def run(settings: SshSettings, pool: ConnectionPool) -> str:
    with SshTransport("leonardo", settings, pool=pool) as transport:
        return transport.run("echo logged-in", timeout=20).stdout.strip()


def test_a_user_certificate_logs_in_where_no_key_is_authorized(
    cert_sshd: CertSshd, pool: ConnectionPool
) -> None:
    cert_sshd.sign_user("-1m:+1h")

    assert run(cert_sshd.settings(), pool) == "logged-in"


def test_site_check_shows_the_certificate_line(cert_sshd: CertSshd) -> None:
    cert_sshd.sign_user("-1m:+2h")

    ((ok, detail),) = certificate_checks("leonardo", cert_sshd.settings())

    assert ok
    assert detail.startswith(f"{cert_sshd.user_key}-cert.pub: valid until ")
    assert detail.endswith("(2 h left)")


def test_without_the_certificate_the_same_key_is_refused(
    cert_sshd: CertSshd, pool: ConnectionPool
) -> None:
    cert_sshd.sign_user("-1m:+1h")
    settings = cert_sshd.settings(certificate_file=None)
    Path(f"{cert_sshd.user_key}-cert.pub").rename(cert_sshd.directory / "aside-cert.pub")
    try:
        with pytest.raises(SiteUnreachable, match="authentication failed") as caught:
            run(settings, pool)
    finally:
        (cert_sshd.directory / "aside-cert.pub").rename(f"{cert_sshd.user_key}-cert.pub")

    assert not isinstance(caught.value, CredentialsExpired)


def test_a_host_certificate_of_another_ca_is_refused(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    cert_sshd.sign_user("-1m:+1h")
    other_ca = Path(f"{_keygen(tmp_path / 'other_ca')}.pub").read_text()

    with pytest.raises(HostKeyRejected, match="signed by an unknown CA"):
        run(cert_sshd.settings(host_ca=other_ca), pool)


def test_a_host_certificate_for_another_name_is_refused(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    cert_sshd.sign_user("-1m:+1h")
    config = tmp_path / "ssh_config"
    # The certificate names 127.0.0.1 and login01.test, not login02.test.
    config.write_text("Host leo\n  HostName 127.0.0.1\n  HostKeyAlias login02.test\n")
    settings = cert_sshd.settings(host="leo")

    transport = SshTransport("leonardo", settings, ssh_config_path=config, pool=pool)
    with pytest.raises(HostKeyRejected, match=r"'login02\.test' is not among its principals"):
        transport.run("true")


def test_pinned_plain_keys_still_work_next_to_a_ca(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    cert_sshd.sign_user("-1m:+1h")
    other = Path(f"{_keygen(tmp_path / 'other_host')}.pub").read_text()
    settings = cert_sshd.settings(host_ca=None, host_keys=[other, cert_sshd.host_key])

    assert run(settings, pool) == "logged-in"


def test_an_expired_certificate_waits_for_renewal_and_then_logs_in(
    cert_sshd: CertSshd, pool: ConnectionPool
) -> None:
    cert = cert_sshd.sign_user("-1m:+12s")
    expires = read_certificate_file(cert).valid_before
    assert run(cert_sshd.settings(), pool) == "logged-in"
    pool.close_all()  # the next command needs a new login
    time.sleep(max(0.0, expires - time.time() + 1))

    with pytest.raises(CredentialsExpired) as caught:
        run(cert_sshd.settings(), pool)
    assert caught.value.transient
    assert "credentials for site leonardo expired at" in str(caught.value)
    assert "step ssh login" in str(caught.value)

    cert_sshd.sign_user("-1m:+1h")  # what `step ssh login` does
    assert run(cert_sshd.settings(), pool) == "logged-in"


def test_site_trust_pins_the_key_of_every_login_node_behind_the_name(
    cert_sshd: CertSshd,
    second_login_node: str,
    pool: ConnectionPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert_sshd.sign_user("-1m:+1h")
    # Round-robin DNS, as for Leonardo's login01..07: one name, several nodes.
    nodes = {"login.test": ["127.0.0.1", "127.0.0.2"]}
    monkeypatch.setattr(transport_module, "_addresses", lambda site, name, port: nodes[name])

    found = fetch_host_keys("leonardo", cert_sshd.settings(host="login.test", host_ca=None))

    assert {(line, address) for line, _, address in found} == {
        (cert_sshd.host_key, "127.0.0.1"),
        (second_login_node, "127.0.0.2"),
    }
    pinned = [line for line, _, _ in found]
    for node in nodes["login.test"]:
        settings = cert_sshd.settings(host=node, host_ca=None, host_keys=pinned)
        assert run(settings, pool) == "logged-in"


def test_a_login_node_without_a_certificate_is_refused_under_a_ca_alone(
    cert_sshd: CertSshd, second_login_node: str, pool: ConnectionPool
) -> None:
    cert_sshd.sign_user("-1m:+1h")

    with pytest.raises(HostKeyRejected, match="NOT TRUSTED"):
        run(cert_sshd.settings(host="127.0.0.2"), pool)


def test_the_resolved_connection_names_certificate_chain_and_policy(cert_sshd: CertSshd) -> None:
    cert_sshd.sign_user("-1m:+2h")

    resolved = resolved_connection("leonardo", cert_sshd.settings())
    text = render_resolved(resolved)

    assert resolved["hostname"] == "127.0.0.1" and resolved["port"] == cert_sshd.port
    assert f"certificatefile {cert_sshd.user_key}-cert.pub (valid until " in text
    assert "hostkey ca ssh-ed25519 SHA256:" in text
    assert resolved["hostkeypolicy"]["known_hosts"] is None


# ----------------------------------------------------- ~/.ssh/config features, for real


def test_a_proxycommand_carries_the_connection(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    if shutil.which("socat") is None:
        pytest.skip("needs socat")
    cert_sshd.sign_user("-1m:+1h")
    marker = tmp_path / "proxy-ran"
    proxy = tmp_path / "proxy.sh"
    proxy.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexec socat - "TCP:$1:$2"\n')
    proxy.chmod(0o755)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host leo\n  HostName 127.0.0.1\n  Port {cert_sshd.port}\n  ProxyCommand {proxy} %h %p\n"
    )
    settings = cert_sshd.settings(host="leo", port=None)

    with SshTransport("leonardo", settings, ssh_config_path=config, pool=pool) as transport:
        assert transport.run("echo via-proxy").stdout.strip() == "via-proxy"
    assert marker.read_text().split() == ["127.0.0.1", str(cert_sshd.port)]


def test_a_jump_host_with_its_own_jump_host(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    """target -> ProxyJump inner -> ProxyJump outer, all this sshd (its CA signed the
    host certificate for 127.0.0.1; KEY-cert.pub logs in on every hop)."""
    cert_sshd.sign_user("-1m:+1h")
    config = tmp_path / "ssh_config"
    port = cert_sshd.port
    config.write_text(
        f"Host leo\n  HostName 127.0.0.1\n  Port {port}\n  ProxyJump inner\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {port}\n  ProxyJump outer\n"
        f"Host outer\n  HostName 127.0.0.1\n  Port {port}\n"
    )
    settings = cert_sshd.settings(host="leo", port=None)

    with SshTransport("leonardo", settings, ssh_config_path=config, pool=pool) as transport:
        assert len(transport._connection.route.hops) == 3
        assert transport.run("echo three-hops").stdout.strip() == "three-hops"


def test_identity_agent_names_the_agent_socket(
    cert_sshd: CertSshd, pool: ConnectionPool, tmp_path: Path
) -> None:
    if shutil.which("ssh-agent") is None:
        pytest.skip("needs ssh-agent")
    cert_sshd.sign_user("-1m:+1h")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        _await_socket(socket_path)
        key_alone = tmp_path / "agent_key"  # without its -cert.pub: only the key in the agent
        key_alone.write_bytes(cert_sshd.user_key.read_bytes())
        key_alone.chmod(0o600)
        env = {"SSH_AUTH_SOCK": str(socket_path), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", str(key_alone)], env=env, check=True)
        config = tmp_path / "ssh_config"
        config.write_text(f"Host leo\n  HostName 127.0.0.1\n  IdentityAgent {socket_path}\n")
        settings = cert_sshd.settings(host="leo", identity_file=None)

        with SshTransport("leonardo", settings, ssh_config_path=config, pool=pool) as transport:
            assert transport.run("echo agent").stdout.strip() == "agent"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def _await_socket(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"ssh-agent did not create {path}")
        time.sleep(0.05)
