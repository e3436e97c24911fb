"""The `Transport` contract (sites/transport.py), run against every transport.

Each test runs once per backend: `LocalTransport`, and `SshTransport` to the sandbox's
real sshd (site-a). A new transport joins by adding a branch to the `remote` fixture;
what only one backend does (host keys, reconnects, ProxyJump, channel limits, process
groups) is tested next to it, in test_local_transport.py and test_ssh_transport.py.

The sandbox's sites live on this machine, so a test checks what landed "on the site"
through `Remote.view`, the same directory as this process sees it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sites.errors import SiteError, TransferError
from sites.local.transport import LocalTransport
from sites.ssh.transport import ConnectionPool, SshTransport
from sites.transport import Transport
from tests.sandbox.documents import ssh_settings
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = pytest.mark.timeout(120)

SSH_SITE = "site-a"
# Names a shell, tar or a digest listing could trip over.
ODD_NAMES = (
    "with space.txt",
    'it\'s "quoted" $x `y`.txt',
    "ünïcødé ☃.txt",
    "-starts-with-dash",
    "*?[a]",
)


@dataclass(frozen=True)
class Remote:
    """A transport under test and a fresh directory on its site."""

    backend: str
    transport: Transport
    root: str  # the directory as the transport addresses it
    view: Path  # the same directory, as this process sees it

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.slurm)])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "local":
        root = tmp_path / "site"
        root.mkdir()
        transport = LocalTransport("laptop")
        yield Remote("local", transport, str(root), root)
        transport.close()
        return
    pool: ConnectionPool = request.getfixturevalue("ssh_pool")
    sandbox: Sandbox = request.getfixturevalue("slurm_sandbox")
    yield from _ssh_remote(sandbox.site(SSH_SITE), pool)


def _ssh_remote(site: SandboxSite, pool: ConnectionPool) -> Iterator[Remote]:
    # Made and removed from here (as root), not over SSH: two round trips fewer a test.
    root = site.home / "transport-contract" / uuid.uuid4().hex[:12]
    owner = pwd.getpwnam(site.user)
    for directory in (root.parent, root):
        directory.mkdir(exist_ok=True)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    transport = SshTransport(site.name, ssh_settings(site), pool=pool)
    try:
        yield Remote("ssh", transport, str(root), root)
    finally:
        transport.close()
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def ssh_pool(slurm_sandbox: Sandbox) -> Iterator[ConnectionPool]:
    """One login for the whole module: the pool keeps a connection open while any
    transport holds a share of it, and `keeper` holds one until the module ends."""
    site = slurm_sandbox.site(SSH_SITE)
    pool = ConnectionPool()
    keeper = SshTransport(site.name, ssh_settings(site), pool=pool)
    yield pool
    keeper.close()
    pool.close_all()


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The local side of transfers."""
    path = tmp_path / "here"
    path.mkdir()
    return path


# --------------------------------------------------------------------------- run


def test_run_returns_output_and_exit_status_without_raising(remote: Remote) -> None:
    command = "echo out; echo err >&2; exit 7"

    result = remote.transport.run(command)

    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert result.command == command
    assert not result.ok
    assert remote.transport.run("true").ok


def test_stdin_reaches_the_command_even_when_large(remote: Remote) -> None:
    data = os.urandom(5 << 20)  # more than an SSH channel window

    result = remote.transport.run("sha256sum", stdin=data, timeout=60)

    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_without_stdin_a_command_reading_it_sees_end_of_file(remote: Remote) -> None:
    assert remote.transport.run("cat", timeout=10).stdout == ""


def test_large_output_on_both_streams_does_not_deadlock(remote: Remote) -> None:
    command = "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"

    result = remote.transport.run(command, timeout=60)

    assert (len(result.stdout), len(result.stderr)) == (3_000_000, 3_000_000)


def test_a_command_printing_without_end_is_cut_off_permanently_and_nothing_hangs(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A site's account decides what its commands print (its ~/.bashrc, its jobs'
    # files): the answer is read into memory only up to the cap (lowered here).
    from sites.local import transport as local_transport
    from sites.ssh import channel

    monkeypatch.setattr(local_transport, "MAX_COMMAND_OUTPUT", 1 << 20)
    monkeypatch.setattr(channel, "MAX_COMMAND_OUTPUT", 1 << 20)

    for stream in ("", ">&2"):
        with pytest.raises(SiteError, match="more than 1048576 bytes") as caught:
            remote.transport.run(f"yes hostile {stream}", timeout=60)
        assert not caught.value.transient
    # Under the cap, everything arrives; the transport is still usable.
    assert len(remote.transport.run("head -c 1000000 /dev/zero", timeout=60).stdout) == 1_000_000


HOSTILE_VALUES = (
    "it's",
    '"double" and \\backslash',
    "$(touch PWNED) `touch PWNED` ${HOME}",
    "; touch PWNED; #",
    "* ? [a] ~",
    "line\nbreak\ttab",
    "--flag",
    "ünïcødé ☃",
    "",
)


def test_quoted_arguments_arrive_literally(remote: Remote) -> None:
    for value in HOSTILE_VALUES:
        command = f"cd {shlex.quote(remote.root)} && " + shlex.join(["printf", "%s", value])

        assert remote.transport.run(command).stdout == value
    assert not (remote.view / "PWNED").exists()


def test_quoted_odd_file_names_reach_the_right_files(remote: Remote) -> None:
    names = [*ODD_NAMES, "line\nbreak", "*"]

    made = remote.transport.run(
        " && ".join(shlex.join(["touch", "--", remote.path(n)]) for n in names)
    )
    # Unquoted, "*" is a glob that matches every other file.
    removed = remote.transport.run(shlex.join(["rm", "--", remote.path("*")]))

    assert made.ok and removed.ok, made.stderr + removed.stderr
    assert sorted(p.name for p in remote.view.iterdir()) == sorted(set(names) - {"*"})


def test_a_timeout_raises_a_transient_error_and_the_transport_stays_usable(
    remote: Remote,
) -> None:
    with pytest.raises(SiteError, match=r"did not finish within 0\.3 s") as caught:
        remote.transport.run("sleep 5", timeout=0.3)

    assert caught.value.transient
    assert remote.transport.run("echo still usable").stdout == "still usable\n"


# --------------------------------------------------------------------------- files


def test_put_and_get_a_file_byte_exact_creating_parents(remote: Remote, here: Path) -> None:
    source = here / "source.bin"
    source.write_bytes(os.urandom(3_000_000))
    source.chmod(0o750)
    target = "new/parent dirs/it's here.bin"

    remote.transport.put(source, remote.path(target))
    remote.transport.get(remote.path(target), here / "back" / "again" / "copy.bin")

    landed = remote.view / target
    assert landed.read_bytes() == source.read_bytes()
    assert landed.stat().st_mode & 0o777 == 0o750
    assert (here / "back" / "again" / "copy.bin").read_bytes() == source.read_bytes()
    # A file appears whole: no temporary file is left next to it on either side.
    assert os.listdir(landed.parent) == [landed.name]
    assert os.listdir(here / "back" / "again") == ["copy.bin"]


def test_files_with_odd_names_round_trip(remote: Remote, here: Path) -> None:
    for name in [*ODD_NAMES, "line\nbreak"]:
        (here / name).write_text(name)

        remote.transport.put(here / name, remote.path(name))
        remote.transport.get(remote.path(name), here / "back" / name)

        assert (remote.view / name).read_text() == name, name
        assert (here / "back" / name).read_text() == name, name


def test_put_overwrites_an_existing_file(remote: Remote, here: Path) -> None:
    (here / "f").write_text("new")
    (here / "g").write_text("old")
    remote.transport.put(here / "g", remote.path("f"))

    remote.transport.put(here / "f", remote.path("f"))

    assert (remote.view / "f").read_text() == "new"


def make_tree(root: Path) -> None:
    """Nested and empty directories, modes, a symlink and odd names."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "sub" / "empty-too").mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "random.bin").write_bytes(os.urandom(1_000_000))
    for name in ODD_NAMES:
        (root / "sub" / "deeper" / name).write_text(f"{name}\n")
    (root / "link").symlink_to("a.txt")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "private").write_text("secret-ish\n")
    (root / "private").chmod(0o600)


def snapshot(root: Path) -> dict[str, object]:
    """Relative path -> (bytes, mode) of a file, ("link", target) or "dir"."""
    entries: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries[key] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[key] = "dir"
        else:
            entries[key] = (path.read_bytes(), oct(path.stat().st_mode & 0o777))
    return entries


def test_put_and_get_a_directory_tree_exactly(remote: Remote, here: Path) -> None:
    make_tree(here / "tree")

    remote.transport.put(here / "tree", remote.path("trees/one"))
    remote.transport.get(remote.path("trees/one"), here / "copy")

    assert snapshot(remote.view / "trees" / "one") == snapshot(here / "tree")
    assert snapshot(here / "copy") == snapshot(here / "tree")


def test_putting_the_same_tree_again_is_harmless(remote: Remote, here: Path) -> None:
    # What a retried staging step does.
    make_tree(here / "tree")
    remote.transport.put(here / "tree", remote.path("again"))

    remote.transport.put(here / "tree", remote.path("again"))

    assert snapshot(remote.view / "again") == snapshot(here / "tree")


def test_a_newline_in_a_name_inside_a_tree_round_trips(
    remote: Remote, here: Path, request: pytest.FixtureRequest
) -> None:
    if remote.backend == "ssh":
        request.applymarker(
            pytest.mark.xfail(
                raises=TransferError,
                strict=True,
                reason="SshTransport refuses newlines in tree names (sites/ssh/transfer.py)",
            )
        )
    (here / "tree").mkdir()
    (here / "tree" / "line\nbreak").write_text("x")

    remote.transport.put(here / "tree", remote.path("tree"))
    remote.transport.get(remote.path("tree"), here / "back")

    assert (remote.view / "tree" / "line\nbreak").read_text() == "x"
    assert (here / "back" / "line\nbreak").read_text() == "x"


def test_an_empty_directory_round_trips(remote: Remote, here: Path) -> None:
    (here / "empty").mkdir()

    remote.transport.put(here / "empty", remote.path("a/b/empty"))
    remote.transport.get(remote.path("a/b/empty"), here / "back")

    assert list((remote.view / "a" / "b" / "empty").iterdir()) == []
    assert list((here / "back").iterdir()) == []


def test_put_merges_a_tree_into_an_existing_directory(remote: Remote, here: Path) -> None:
    source = here / "outputs"
    (source / "ckpt").mkdir(parents=True)
    (source / "ckpt" / "step2.pt").write_text("new")
    (source / "metrics.jsonl").write_text("updated")
    (here / "step1.pt").write_text("kept")
    (here / "metrics.jsonl").write_text("old")
    remote.transport.put(here / "step1.pt", remote.path("outputs/ckpt/step1.pt"))
    remote.transport.put(here / "metrics.jsonl", remote.path("outputs/metrics.jsonl"))

    remote.transport.put(source, remote.path("outputs"))

    target = remote.view / "outputs"
    assert (target / "ckpt" / "step1.pt").read_text() == "kept"
    assert (target / "ckpt" / "step2.pt").read_text() == "new"
    assert (target / "metrics.jsonl").read_text() == "updated"


def test_a_file_never_replaces_a_directory(remote: Remote, here: Path) -> None:
    (here / "f").write_text("x")
    remote.transport.put(here / "f", remote.path("a-dir/inside"))

    with pytest.raises(TransferError, match="is a directory") as caught:
        remote.transport.put(here / "f", remote.path("a-dir"))

    assert not caught.value.transient
    assert (remote.view / "a-dir" / "inside").is_file()


def test_getting_a_missing_path_fails_permanently_and_leaves_nothing(
    remote: Remote, here: Path
) -> None:
    with pytest.raises(TransferError) as caught:
        remote.transport.get(remote.path("does-not-exist"), here / "x" / "copy.bin")

    assert not caught.value.transient
    assert "does-not-exist" in str(caught.value)
    assert [p for p in here.rglob("*") if not p.is_dir()] == []  # not even a partial file


# --------------------------------------------------------------------------- close


def test_close_is_safe_twice(remote: Remote) -> None:
    assert remote.transport.run("true").ok

    remote.transport.close()
    remote.transport.close()
