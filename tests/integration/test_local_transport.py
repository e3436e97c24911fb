"""`LocalTransport` with real processes and files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sites.errors import SiteError, TransferError
from sites.local.transport import LocalTransport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def transport() -> LocalTransport:
    return LocalTransport("laptop")


def test_run_returns_output_and_exit_code_without_raising(transport: LocalTransport) -> None:
    result = transport.run("echo out; echo err >&2; exit 7")

    assert (result.returncode, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.ok
    assert result.command == "echo out; echo err >&2; exit 7"


def test_run_feeds_stdin_bytes(transport: LocalTransport) -> None:
    result = transport.run("tr a-z A-Z", stdin=b"shout\n")

    assert result.ok and result.stdout == "SHOUT\n"


def test_run_without_stdin_does_not_wait_for_input(transport: LocalTransport) -> None:
    assert transport.run("cat", timeout=10).stdout == ""


def test_timeout_raises_a_transient_error_and_kills_what_the_command_started(
    transport: LocalTransport, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {pid_file}; wait"

    with pytest.raises(SiteError, match=r"did not finish within 0\.5 s") as caught:
        transport.run(command, timeout=0.5)

    assert caught.value.transient
    assert "sleep 60" in str(caught.value)
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _is_running(sleeper):
        assert time.monotonic() < deadline, "the background sleep survived the timeout"
        time.sleep(0.05)


def _is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_put_and_get_copy_a_file_creating_parents(
    transport: LocalTransport, tmp_path: Path
) -> None:
    source = tmp_path / "spec.yaml"
    source.write_text("name: x\n")
    os.chmod(source, 0o640)

    transport.put(source, str(tmp_path / "site" / "a" / "b" / "spec.yaml"))
    transport.get(str(tmp_path / "site" / "a" / "b" / "spec.yaml"), tmp_path / "back" / "s.yaml")

    copied = tmp_path / "back" / "s.yaml"
    assert copied.read_text() == "name: x\n"
    assert copied.stat().st_mode & 0o777 == 0o640
    assert not list((tmp_path / "back").glob("*.part"))


def test_put_merges_a_tree_into_an_existing_directory(
    transport: LocalTransport, tmp_path: Path
) -> None:
    source = tmp_path / "outputs"
    (source / "ckpt").mkdir(parents=True)
    (source / "ckpt" / "step2.pt").write_text("new")
    (source / "metrics.jsonl").write_text("updated")
    target = tmp_path / "site" / "outputs"
    (target / "ckpt").mkdir(parents=True)
    (target / "ckpt" / "step1.pt").write_text("kept")
    (target / "metrics.jsonl").write_text("old")

    transport.put(source, str(target))

    assert (target / "ckpt" / "step1.pt").read_text() == "kept"
    assert (target / "ckpt" / "step2.pt").read_text() == "new"
    assert (target / "metrics.jsonl").read_text() == "updated"


def test_get_of_a_missing_path_is_a_permanent_transfer_error(
    transport: LocalTransport, tmp_path: Path
) -> None:
    with pytest.raises(TransferError, match="missing") as caught:
        transport.get(str(tmp_path / "missing"), tmp_path / "here")

    assert not caught.value.transient
    assert not (tmp_path / "here").exists()


def test_a_file_never_replaces_a_directory(transport: LocalTransport, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_text("x")
    (tmp_path / "dir" / "inside").mkdir(parents=True)

    with pytest.raises(TransferError, match="is a directory"):
        transport.put(source, str(tmp_path / "dir"))

    assert (tmp_path / "dir" / "inside").is_dir()


def test_a_directory_cannot_be_copied_into_itself(
    transport: LocalTransport, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")

    with pytest.raises(TransferError, match="into itself"):
        transport.put(tmp_path / "d", str(tmp_path / "d" / "sub"))
    transport.put(tmp_path / "d", str(tmp_path / "d"))  # onto itself: nothing to do

    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f"]


def test_close_is_safe_twice(transport: LocalTransport) -> None:
    transport.close()
    transport.close()
    assert transport.run("true").ok
