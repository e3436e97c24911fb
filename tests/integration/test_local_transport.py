"""`LocalTransport` with real processes and files: what only a local transport does.
What every transport does is in test_transport_contract.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sites.errors import SiteError, TransferError
from sites.local.transport import LocalTransport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def transport() -> LocalTransport:
    return LocalTransport("laptop")


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


def test_a_directory_cannot_be_copied_into_itself(
    transport: LocalTransport, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")

    with pytest.raises(TransferError, match="into itself"):
        transport.put(tmp_path / "d", str(tmp_path / "d" / "sub"))
    transport.put(tmp_path / "d", str(tmp_path / "d"))  # onto itself: nothing to do

    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["f"]
