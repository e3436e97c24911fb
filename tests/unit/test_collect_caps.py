"""What a site's attempt may make this machine read or store: caps on the fetched
attempt, on each metrics file, and on each log uploaded to MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.collect import capped_log
from flows.layout import StageLayout
from flows.metrics import MetricsFileTooLarge, read_metrics_file
from flows.staging import fetch_attempt
from sites.driver import DriverPool
from sites.errors import TransferError
from sites.transport import TransferLimits
from tests.helpers import local_site


def test_a_metrics_file_over_the_cap_is_refused_naming_cap_and_size(tmp_path: Path) -> None:
    path = tmp_path / "0.jsonl"
    path.write_text('{"key": "loss", "value": 1}\n' * 100)

    with pytest.raises(MetricsFileTooLarge, match=r"holds 2800 bytes, more than the cap of 1000"):
        read_metrics_file(path, max_bytes=1000)

    assert read_metrics_file(path, max_bytes=2800).count("\n") == 100
    assert read_metrics_file(tmp_path / "missing.jsonl") == ""


def test_a_big_log_is_uploaded_as_its_tail_with_a_note(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "0.err"
    log.parent.mkdir()
    log.write_bytes(b"early line\n" * 1000 + b"Traceback: the real error\n")

    cut = capped_log(log, max_bytes=100)

    assert cut.name == "0.err" and cut != log
    lines = cut.read_bytes().splitlines()
    assert lines[0].startswith(b"[hpcfleet: this log was cut: 11026 bytes, only the last 100")
    assert lines[-1] == b"Traceback: the real error"
    assert len(cut.read_bytes()) < 200
    assert capped_log(log, max_bytes=20_000) == log


@pytest.mark.parametrize(
    ("limits", "cap"),
    [(TransferLimits(max_files=5), "max_files"), (TransferLimits(max_bytes=1000), "max_bytes")],
)
def test_fetching_an_attempt_over_the_caps_is_refused(
    tmp_path: Path, limits: TransferLimits, cap: str
) -> None:
    driver = DriverPool(tmp_path / "sites").get(local_site("site-a", "cuni"))
    layout = StageLayout(driver.workdir, "r1", "train")
    logs = Path(layout.logs(1))
    logs.mkdir(parents=True)
    for index in range(10):
        (logs / f"{index}.out").write_bytes(b"x" * 200)

    with pytest.raises(TransferError, match=cap):
        fetch_attempt(driver, layout, 1, tmp_path / "fetched", limits)

    assert not (tmp_path / "fetched").exists()
