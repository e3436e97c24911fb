"""A site that turned hostile, against the real sshd of the sandbox: what its `tar`
prints and what its registered names say must not reach outside their room."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.site import SshSettings
from sites import remote
from sites.errors import SiteUnreachable, TransferError
from sites.ssh.transport import ConnectionPool, SshTransport
from sites.transport import TransferLimits
from tests.integration.test_ssh_transport import settings_for
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]

FAKE_BIN = ".hpcfleet-hostile-bin"
# A relative PATH entry: only a command started in a directory that holds FAKE_BIN
# finds the fake `tar`, so the other users of the shared sandbox are not affected.
BASHRC_LINE = f'PATH="{FAKE_BIN}:$PATH"  # hpcfleet hostile-site test {os.getpid()}\n'


@pytest.fixture
def site_a(slurm_sandbox: Sandbox) -> SandboxSite:
    return slurm_sandbox.site("site-a")


@pytest.fixture
def transport(site_a: SandboxSite) -> Iterator[SshTransport]:
    pool = ConnectionPool()
    with SshTransport(site_a.name, settings_for(site_a), pool=pool) as opened:
        yield opened
        opened.run("rm -rf hpcfleet-hostile-test")
    pool.close_all()


@pytest.fixture
def path_changed_by_a_job(site_a: SandboxSite) -> Iterator[None]:
    """What a job on the site can do: put its own directory first in the login PATH."""
    bashrc = site_a.home / ".bashrc"
    original = bashrc.read_text()
    bashrc.write_text(original + BASHRC_LINE)
    try:
        yield
    finally:
        bashrc.write_text(bashrc.read_text().replace(BASHRC_LINE, ""))


def _member(name: str, kind: bytes, linkname: str = "", data: bytes = b"") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, linkname, len(data), 0o755
    return info


def path_max_escape(target: Path) -> bytes:
    """CVE-2025-4517: links whose expansion exceeds PATH_MAX, so that realpath() stops
    resolving them and `tarfile.data_filter` believes `escape` points inside; then a
    file written through `escape` lands at the absolute path `target`."""
    component, steps = "d" * 247, "abcdefghijklmnop"
    members: list[tarfile.TarInfo] = []
    path = step_path = ""
    for step in steps:
        members.append(_member(os.path.join(path, component), tarfile.DIRTYPE))
        members.append(_member(os.path.join(path, step), tarfile.SYMTYPE, component))
        path, step_path = os.path.join(path, component), os.path.join(step_path, step)
    long_link = os.path.join(step_path, "l" * 254)
    members.append(_member(long_link, tarfile.SYMTYPE, "../" * len(steps)))
    members.append(_member("escape", tarfile.SYMTYPE, long_link + "/.." * (len(steps) + 1)))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            archive.addfile(member)
        payload = b"written by a hostile site\n"
        archive.addfile(
            _member(f"escape{target}", tarfile.REGTYPE, data=payload), io.BytesIO(payload)
        )
    return buffer.getvalue()


def test_a_crafted_tar_stream_from_the_site_cannot_write_outside(
    transport: SshTransport, path_changed_by_a_job: None, tmp_path: Path
) -> None:
    target = tmp_path / "outside" / "pwned.txt"
    target.parent.mkdir()
    crafted = tmp_path / "crafted"
    (crafted / FAKE_BIN).mkdir(parents=True)
    (crafted / FAKE_BIN / "stream.tar").write_bytes(path_max_escape(target))
    fake_tar = crafted / FAKE_BIN / "tar"
    fake_tar.write_text(f'#!/bin/sh\nexec cat "{FAKE_BIN}/stream.tar"\n')
    fake_tar.chmod(0o755)
    transport.put(crafted, "hpcfleet-hostile-test/outputs")
    fetched = tmp_path / "fetched"

    with pytest.raises(TransferError, match="refused archive member '"):
        transport.get("hpcfleet-hostile-test/outputs", fetched)

    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_an_honest_tree_still_arrives_through_the_same_login(
    transport: SshTransport, path_changed_by_a_job: None, tmp_path: Path
) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "model.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "tree" / "latest").symlink_to("sub/model.bin")
    transport.put(tmp_path / "tree", "hpcfleet-hostile-test/tree")

    transport.get("hpcfleet-hostile-test/tree", tmp_path / "back")

    assert (tmp_path / "back/latest").read_bytes() == (tmp_path / "tree/sub/model.bin").read_bytes()


# --------------------------------------------------------------------------- Match exec


@pytest.fixture(autouse=True)
def _stdin_for_match_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko runs `Match exec` through invoke, which reads the caller's stdin."""
    monkeypatch.setattr("sys.stdin", io.StringIO())


def config_with_match_exec(site: SandboxSite, directory: Path) -> Path:
    """The sandbox's ssh_config behind a common idiom: settings chosen by whether the
    host answers (`Match exec "nc -z -w1 %h 22"`; here a command that is always there)."""
    config = directory / "ssh_config"
    ran = directory / "match-exec-ran"
    config.write_text(
        f'Match exec "test -n %h && touch {ran}"\n    ServerAliveInterval 15\n\n'
        + site.ssh_config.read_text()
    )
    return config


@pytest.mark.parametrize(
    ("host", "jump"),
    [("x;touch {marker};#", None), ("$(touch {marker})", None), ("site-a", "x|touch {marker}")],
    ids=["host", "host-subshell", "jump-host"],
)
def test_a_hostile_host_never_runs_in_match_exec(
    site_a: SandboxSite, tmp_path: Path, host: str, jump: str | None
) -> None:
    marker = tmp_path / "pwned"
    config = config_with_match_exec(site_a, tmp_path)
    jumps = [jump.format(marker=marker)] if jump else []
    # Past the registry's own check: as if the value came from an older database.
    settings = SshSettings.model_construct(
        host=host.format(marker=marker), user=None, proxy_jump=jumps
    )
    pool = ConnectionPool()

    with pytest.raises(SiteUnreachable, match="refuses shell metacharacters") as caught:
        SshTransport("site-a", settings, ssh_config_path=config, pool=pool).run("true")

    pool.close_all()
    assert not caught.value.transient
    assert not marker.exists()


def test_a_valid_host_behind_match_exec_still_connects(site_a: SandboxSite, tmp_path: Path) -> None:
    config = config_with_match_exec(site_a, tmp_path)
    pool = ConnectionPool()

    with SshTransport("site-a", SshSettings(host="site-a"), ssh_config_path=config, pool=pool) as t:
        assert t.run("echo $HPC_SITE").stdout == "site-a\n"

    pool.close_all()
    assert (tmp_path / "match-exec-ran").exists()


# --------------------------------------------------------------------------- caps


def test_an_endless_stream_is_refused_at_the_byte_cap(
    transport: SshTransport, path_changed_by_a_job: None, tmp_path: Path
) -> None:
    header = tarfile.TarInfo("checkpoint.bin")
    header.size = 5 << 30  # announced; the fake tar then sends zeros for ever
    crafted = tmp_path / "crafted"
    (crafted / FAKE_BIN).mkdir(parents=True)
    (crafted / FAKE_BIN / "header").write_bytes(header.tobuf(format=tarfile.GNU_FORMAT))
    fake_tar = crafted / FAKE_BIN / "tar"
    fake_tar.write_text(f'#!/bin/sh\ncat "{FAKE_BIN}/header"; exec cat /dev/zero\n')
    fake_tar.chmod(0o755)
    transport.put(crafted, "hpcfleet-hostile-test/attempt-1")

    with pytest.raises(TransferError, match=r"cap max_bytes=1048576"):
        transport.get(
            "hpcfleet-hostile-test/attempt-1",
            tmp_path / "fetched",
            limits=TransferLimits(max_bytes=1 << 20),
        )

    assert sum(p.stat().st_size for p in (tmp_path / "fetched").rglob("*")) == 0


def test_an_attempt_with_too_many_files_is_refused_at_the_file_cap(
    transport: SshTransport, tmp_path: Path
) -> None:
    transport.run(
        "mkdir -p hpcfleet-hostile-test/many && cd hpcfleet-hostile-test/many && "
        "for i in $(seq 1 50); do echo $i > f$i; done"
    )

    with pytest.raises(TransferError, match=r"cap max_files=10"):
        transport.get(
            "hpcfleet-hostile-test/many", tmp_path / "fetched", limits=TransferLimits(max_files=10)
        )

    assert len(list((tmp_path / "fetched").rglob("*"))) <= 10


# --------------------------------------------------------------------------- owner-only


def test_directories_created_on_the_site_are_owner_only(
    transport: SshTransport, site_a: SandboxSite, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "tree" / "sub").mkdir(parents=True)

    transport.put(tmp_path / "f", "hpcfleet-hostile-test/file/parent/f")
    transport.put(tmp_path / "tree", "hpcfleet-hostile-test/tree/parent/tree")
    transport.run(remote.make_dirs_command(["hpcfleet-hostile-test/made/a/b"]))

    home = site_a.home / "hpcfleet-hostile-test"
    for created in ("file/parent", "tree/parent/tree", "made/a", "made/a/b"):
        assert (home / created).stat().st_mode & 0o777 == 0o700, created
