"""The plain listing table of `hpcfleet run list`."""

from __future__ import annotations

from hpcfleet.display import columns


def test_columns_are_aligned_to_their_widest_cell() -> None:
    text = columns(("run", "state", "reason"), [("a1", "FAILED", "stage x failed"), ("b22", "OK", "")])
    assert text.splitlines() == [
        "run  state   reason",
        "a1   FAILED  stage x failed",
        "b22  OK",
    ]


def test_a_cell_stays_on_its_line() -> None:
    text = columns(("run", "reason"), [("a1", "exit code 3:\n  Traceback (most\trecent)")])
    assert text.splitlines()[1] == "a1   exit code 3: Traceback (most recent)"


def test_no_rows_prints_the_header() -> None:
    assert columns(("run", "name"), []) == "run  name\n"
