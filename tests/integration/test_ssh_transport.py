"""SshTransport against the real sshd of the SLURM sandbox (site-a, site-b): what only
SSH has (host keys, ssh_config, ProxyJump, one shared login, channel limits, reconnects).
What every transport does is in test_transport_contract.py."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from registry.site import SshSettings
from sites.errors import HostKeyRejected, SiteUnreachable
from sites.ssh.hostkeys import HostKey
from sites.ssh.transport import ConnectionPool, SshTransport, fetch_host_key
from tests.sandbox.documents import ssh_settings as settings_for
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


@pytest.fixture
def site_a(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site("site-a")


@pytest.fixture
def site_b(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site("site-b")


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    """A pool of the test's own, so that connection counts start at zero."""
    own = ConnectionPool()
    yield own
    own.close_all()


@pytest.fixture
def transport(site_a: SandboxSite, pool: ConnectionPool) -> Iterator[SshTransport]:
    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as opened:
        yield opened
        opened.run("rm -rf hpcfleet-test")


def accepted_logins(sandbox: Sandbox, site: SandboxSite) -> int:
    log = sandbox.base_dir / site.name / "log" / "sshd.log"
    if not log.is_file():
        pytest.skip(f"the sandbox keeps no sshd log at {log}")
    return log.read_text(errors="replace").count("Accepted publickey")


def write_private_key(path: Path, key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    """Write `key` passphrase-less in OpenSSH format; returns its base64 body."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return "".join(pem.decode().splitlines()[1:-1])


def public_line(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


# --------------------------------------------------------------------------- host keys


def test_the_pinned_host_key_is_accepted(transport: SshTransport) -> None:
    assert transport.run("true").ok


def test_a_changed_host_key_is_refused_before_logging_in(
    slurm_sandbox: Sandbox, site_a: SandboxSite, site_b: SandboxSite, pool: ConnectionPool
) -> None:
    before = accepted_logins(slurm_sandbox, site_a)
    wrong = SshTransport(site_a.name, settings_for(site_a, host_key=site_b.host_key), pool=pool)

    with pytest.raises(HostKeyRejected) as caught:
        wrong.run("true")

    message = str(caught.value)
    assert "site 'site-a'" in message and "CHANGED" in message
    assert HostKey.from_line(site_b.host_key).fingerprint in message  # expected
    assert HostKey.from_line(site_a.host_key).fingerprint in message  # offered
    assert not caught.value.transient
    assert accepted_logins(slurm_sandbox, site_a) == before


def test_a_pinned_key_of_another_type_is_refused_with_both_fingerprints(
    site_a: SandboxSite, pool: ConnectionPool
) -> None:
    pinned = public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    wrong = SshTransport(site_a.name, settings_for(site_a, host_key=pinned), pool=pool)

    with pytest.raises(HostKeyRejected) as caught:
        wrong.run("true")

    assert HostKey.from_line(pinned).fingerprint in str(caught.value)
    assert HostKey.from_line(site_a.host_key).fingerprint in str(caught.value)


def test_a_known_hosts_file_is_enough(site_a: SandboxSite, pool: ConnectionPool) -> None:
    settings = settings_for(site_a, host_key=None, known_hosts=str(site_a.known_hosts))

    with SshTransport(site_a.name, settings, pool=pool) as transport:
        assert transport.run("echo ok").stdout == "ok\n"


def test_an_unknown_host_key_is_refused_and_never_added(
    site_a: SandboxSite, pool: ConnectionPool, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    settings = settings_for(site_a, host_key=None, known_hosts=str(known_hosts))

    with pytest.raises(HostKeyRejected, match="UNKNOWN") as caught:
        SshTransport(site_a.name, settings, pool=pool).run("true")

    assert HostKey.from_line(site_a.host_key).fingerprint in str(caught.value)
    assert known_hosts.read_text() == ""


def test_fetch_host_key_reads_the_key_without_logging_in(
    slurm_sandbox: Sandbox, site_a: SandboxSite
) -> None:
    before = accepted_logins(slurm_sandbox, site_a)
    settings = settings_for(site_a, host_key=None, identity_file="/nonexistent/key")

    line, fingerprint = fetch_host_key(site_a.name, settings)

    assert line == site_a.host_key
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=line, capture_output=True, text=True, check=True
    )
    assert fingerprint == keygen.stdout.split()[1]
    assert accepted_logins(slurm_sandbox, site_a) == before


# --------------------------------------------------------------------------- config, jumps


def test_an_ssh_config_alias_supplies_host_port_user_key_and_known_hosts(
    site_a: SandboxSite, pool: ConnectionPool
) -> None:
    settings = SshSettings(host="site-a")

    with SshTransport("site-a", settings, ssh_config_path=site_a.ssh_config, pool=pool) as t:
        assert t.run("echo $HPC_SITE").stdout == "site-a\n"


def test_proxy_jump_through_site_a_reaches_site_b(
    site_a: SandboxSite, site_b: SandboxSite, pool: ConnectionPool
) -> None:
    settings = SshSettings(host="site-b", proxy_jump=["site-a"], host_key=site_b.host_key)

    with SshTransport("site-b", settings, ssh_config_path=site_a.ssh_config, pool=pool) as t:
        assert t.run("echo $HPC_SITE $SSH_CONNECTION").stdout.split()[0] == "site-b"


def test_a_jump_host_with_an_unknown_key_is_refused(
    site_a: SandboxSite, site_b: SandboxSite, pool: ConnectionPool, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        site_a.ssh_config.read_text().replace(str(site_a.known_hosts), str(tmp_path / "empty"))
    )
    settings = SshSettings(host="site-b", proxy_jump=["site-a"], host_key=site_b.host_key)

    with pytest.raises(HostKeyRejected, match=r"127\.0\.0\.1:2221 is UNKNOWN"):
        SshTransport("site-b", settings, ssh_config_path=config, pool=pool).run("true")


# --------------------------------------------------------------------------- one connection


def test_twenty_concurrent_commands_share_one_login(
    slurm_sandbox: Sandbox, site_a: SandboxSite, pool: ConnectionPool
) -> None:
    before = accepted_logins(slurm_sandbox, site_a)
    transports = [SshTransport(site_a.name, settings_for(site_a), pool=pool) for _ in range(4)]
    results: list[str] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            transport = transports[index % len(transports)]
            results.append(transport.run(f"sleep 0.3; echo {index}", timeout=60).stdout)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(int(r) for r in results) == list(range(20))
    assert [c.logins for c in pool.connections()] == [1]
    assert accepted_logins(slurm_sandbox, site_a) == before + 1
    for transport in transports:
        transport.close()
    assert pool.connections() == []


def test_rekeying_under_concurrent_load_keeps_the_connection(transport: SshTransport) -> None:
    # A re-key every 64 KiB, while channels open and close on four threads: paramiko
    # alone deadlocks here (issue #822) and then drops the connection.
    transport.run("true")
    transport.connection.transport().packetizer.REKEY_BYTES = 1 << 16
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                result = transport.run("head -c 40000 /dev/zero", timeout=30)
                assert len(result.stdout) == 40000
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert transport.connection.logins == 1


# --------------------------------------------------------------------------- failures


def test_authentication_failure_names_user_host_and_key_and_leaks_no_secret(
    site_a: SandboxSite, pool: ConnectionPool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stranger = tmp_path / "id_stranger"
    secret = write_private_key(stranger, ed25519.Ed25519PrivateKey.generate())
    real_secret = "".join(site_a.key_path.read_text().splitlines()[1:-1])
    settings = settings_for(site_a, identity_file=str(stranger))

    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as good:
        good.run("true")
    with pytest.raises(SiteUnreachable) as caught:
        SshTransport(site_a.name, settings, pool=pool).run("true")

    message = str(caught.value)
    assert not caught.value.transient
    assert f"{site_a.user}@{site_a.host}:{site_a.port}" in message
    assert str(stranger) in message
    for text in (message, caplog.text, *(str(r.args) for r in caplog.records)):
        for material in (secret, real_secret):
            assert material[40:80] not in text
        assert "PRIVATE KEY" not in text


def test_an_encrypted_key_is_reported_as_such(
    site_a: SandboxSite, pool: ConnectionPool, tmp_path: Path
) -> None:
    key = tmp_path / "id_locked"
    key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    settings = settings_for(site_a, identity_file=str(key))

    with pytest.raises(SiteUnreachable, match="encrypted") as caught:
        SshTransport(site_a.name, settings, pool=pool).run("true")

    assert not caught.value.transient


def test_after_sshd_restarts_the_next_command_reconnects(
    slurm_faults: Sandbox, site_a: SandboxSite, pool: ConnectionPool
) -> None:
    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as transport:
        assert transport.run("true").ok
        slurm_faults.stop("site-a", "sshd")
        slurm_faults.start("site-a", "sshd")

        assert transport.run("echo back").stdout == "back\n"
        assert transport.connection.logins == 2


def test_a_command_cut_off_by_sshd_stopping_is_transient(
    slurm_faults: Sandbox, site_a: SandboxSite, pool: ConnectionPool
) -> None:
    marker = f"sleep 31.{os.getpid()}"
    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as transport:
        failures: list[BaseException] = []

        def long_command() -> None:
            try:
                transport.run(f"exec {marker}", timeout=60)
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=long_command)
        worker.start()
        deadline = time.monotonic() + 20
        pattern = "slee[p]" + marker.removeprefix("sleep")  # does not match pgrep's own shell
        while slurm_faults.run_on(site_a, ["pgrep", "-f", pattern]).returncode != 0:
            assert time.monotonic() < deadline, "the remote command never started"
            time.sleep(0.05)
        slurm_faults.stop("site-a", "sshd")
        worker.join()

    assert len(failures) == 1
    assert isinstance(failures[0], SiteUnreachable), failures[0]
    assert failures[0].transient
    assert "connection was lost" in str(failures[0])


def test_a_rejecting_partition_is_a_transient_unreachable(
    slurm_faults: Sandbox, site_a: SandboxSite, pool: ConnectionPool
) -> None:
    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as transport:
        assert transport.run("true").ok
        slurm_faults.partition("site-a", "reject")

        with pytest.raises(SiteUnreachable) as caught:
            transport.run("true")

        assert caught.value.transient
        slurm_faults.heal("site-a")
        assert transport.run("echo healed").stdout == "healed\n"


def test_a_dropping_partition_times_out_and_healing_recovers_at_once(
    slurm_faults: Sandbox, site_a: SandboxSite, pool: ConnectionPool
) -> None:
    settings = settings_for(site_a)
    with SshTransport(site_a.name, settings, pool=pool, connect_timeout=2) as transport:
        assert transport.run("true").ok
        slurm_faults.partition("site-a", "drop")

        with pytest.raises(SiteUnreachable) as caught:
            transport.run("true")

        assert caught.value.transient
        slurm_faults.heal("site-a")
        # The silent connection was dropped, so the next call logs in afresh instead
        # of waiting for TCP's retransmission back-off.
        assert transport.run("echo healed").stdout == "healed\n"
        assert transport.connection.logins == 2


def test_more_channels_than_sshd_allows_are_retried_not_failed(
    site_a: SandboxSite, pool: ConnectionPool
) -> None:
    # sshd's MaxSessions is 10; let the transport try 14 at once.
    with SshTransport(site_a.name, settings_for(site_a), pool=pool, max_channels=14) as t:
        outputs: list[str] = []
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                outputs.append(t.run(f"sleep 0.5; echo {index}", timeout=60).stdout)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(14)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert sorted(int(o) for o in outputs) == list(range(14))
