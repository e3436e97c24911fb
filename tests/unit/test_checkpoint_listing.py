"""The checkpoint listing (sites.checkpoints): run by a real `sh` over real files, and
its parser fed hostile answers."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from sites.checkpoints import (
    MARK,
    CheckpointWatch,
    checkpoints_command,
    parse_checkpoints,
    split_listing,
    with_listing,
)


def run(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, errors="surrogateescape", check=False
    )


def write_checkpoint(outputs: Path, name: str, ready: str = "model.safetensors") -> str:
    directory = outputs / "checkpoints" / name
    directory.mkdir(parents=True, exist_ok=True)
    data = f"weights of {name}".encode()
    (directory / ready).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    path = tmp_path / "run dir" / "outputs"  # a space in the site's path is fine
    path.mkdir(parents=True)
    return path


def watch_of(outputs: Path) -> CheckpointWatch:
    return CheckpointWatch(str(outputs), "checkpoints", "iter_*", "model.safetensors")


def test_lists_ready_checkpoints_with_their_digest(outputs: Path) -> None:
    digests = {name: write_checkpoint(outputs, name) for name in ("iter_100", "iter_200")}
    (outputs / "checkpoints" / "iter_300").mkdir()  # still being written: no ready file
    (outputs / "checkpoints" / "other_1").mkdir()
    write_checkpoint(outputs, "other_1")  # does not match the pattern
    watch = watch_of(outputs)
    result = run(checkpoints_command([watch]))
    assert result.returncode == 0, result.stderr
    listing = parse_checkpoints(result.stdout, [watch])
    found = {c.name: c for c in listing.found}
    assert sorted(found) == ["iter_100", "iter_200"]
    assert found["iter_100"].path == "checkpoints/iter_100"
    assert found["iter_100"].sha256 == digests["iter_100"]
    assert found["iter_100"].size == len(b"weights of iter_100")
    assert listing.refused == []


def test_known_checkpoints_are_not_hashed_again_but_a_changed_one_is(outputs: Path) -> None:
    write_checkpoint(outputs, "iter_100")
    write_checkpoint(outputs, "iter_200")
    watch = watch_of(outputs)
    first = parse_checkpoints(run(checkpoints_command([watch])).stdout, [watch]).found
    known = [c.key for c in first]
    again = {
        c.name: c
        for c in parse_checkpoints(run(checkpoints_command([watch], known)).stdout, [watch]).found
    }
    assert again["iter_100"].sha256 is None and again["iter_200"].sha256 is None
    # overwritten by a resumed training: another size, so hashed again
    ready = outputs / "checkpoints" / "iter_200" / "model.safetensors"
    ready.write_bytes(b"new weights, longer than before")
    changed = {
        c.name: c
        for c in parse_checkpoints(run(checkpoints_command([watch], known)).stdout, [watch]).found
    }
    assert changed["iter_100"].sha256 is None
    assert changed["iter_200"].sha256 == hashlib.sha256(ready.read_bytes()).hexdigest()


def test_several_watches_and_a_missing_outputs_dir(outputs: Path, tmp_path: Path) -> None:
    write_checkpoint(outputs, "iter_1")
    flat = tmp_path / "flat"
    (flat / "step-07.ckpt").mkdir(parents=True)
    (flat / "step-07.ckpt" / "DONE").write_text("")
    watches = [
        CheckpointWatch(str(tmp_path / "not-yet"), "checkpoints", "iter_*", "model.safetensors"),
        watch_of(outputs),
        CheckpointWatch(str(flat), "", "step-??.ckpt", "DONE"),
    ]
    found = parse_checkpoints(run(checkpoints_command(watches)).stdout, watches).found
    assert [(c.watch, c.path) for c in found] == [(1, "checkpoints/iter_1"), (2, "step-07.ckpt")]


def test_hostile_names_on_the_site_are_never_accepted(outputs: Path, tmp_path: Path) -> None:
    write_checkpoint(outputs, "iter_ok")
    write_checkpoint(outputs, "iter_new\nline")
    write_checkpoint(outputs, "iter_$(touch pwned)")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "model.safetensors").write_text("not yours")
    os.symlink(outside, outputs / "checkpoints" / "iter_link")  # a link out of the outputs
    os.symlink(outside / "model.safetensors", outputs / "checkpoints" / "iter_ok" / "x")
    (outputs / "checkpoints" / "iter_file_link").mkdir()
    os.symlink(
        outside / "model.safetensors",
        outputs / "checkpoints" / "iter_file_link" / "model.safetensors",
    )
    watch = watch_of(outputs)
    result = run(checkpoints_command([watch]))
    listing = parse_checkpoints(result.stdout, [watch])
    assert [c.name for c in listing.found] == ["iter_ok"]
    assert len(listing.refused) == 2 and all("not a checkpoint name" in r for r in listing.refused)
    assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("0\0checkpoints/..\0" + "1 2\0-\0", "not a checkpoint name"),
        ("0\0checkpoints/../x\0" + "1 2\0-\0", "not directly under"),
        ("0\0elsewhere/iter_1\0" + "1 2\0-\0", "not directly under"),
        ("0\0checkpoints/a/iter_1\0" + "1 2\0-\0", "not directly under"),
        ("7\0checkpoints/iter_1\0" + "1 2\0-\0", "no such watch"),
        ("0\0checkpoints/iter_1\0" + "x 2\0-\0", "bad size"),
        ("0\0checkpoints/iter_1\0" + "1 2\0" + "Z" * 64 + "\0", "bad sha256"),
        ("0\0checkpoints/iter_\x1b[2J\0" + "1 2\0-\0", "not a checkpoint name"),
    ],
)
def test_parser_refuses_forged_entries(answer: str, why: str, outputs: Path) -> None:
    listing = parse_checkpoints(answer, [watch_of(outputs)])
    assert listing.found == [] and len(listing.refused) == 1 and why in listing.refused[0]


def test_a_cut_short_answer_keeps_the_whole_entries(outputs: Path) -> None:
    answer = "0\0checkpoints/iter_1\0" + "5 9\0" + "a" * 64 + "\0" + "0\0checkpoints/iter_2\0" + "5"
    found = parse_checkpoints(answer, [watch_of(outputs)]).found
    assert [(c.name, c.size, c.mtime, c.sha256) for c in found] == [("iter_1", 5, 9, "a" * 64)]


def test_listing_rides_on_the_status_command_which_keeps_its_exit_status(outputs: Path) -> None:
    write_checkpoint(outputs, "iter_5")
    watch = watch_of(outputs)
    command = with_listing("echo status line; (exit 3)", checkpoints_command([watch]))
    result = run(command)
    assert result.returncode == 3
    status, listing = split_listing(result.stdout)
    assert status == "status line\n"
    assert listing is not None
    assert [c.name for c in parse_checkpoints(listing, [watch]).found] == ["iter_5"]
    assert split_listing("no marker here") == ("no marker here", None)
    # A file name holding the marker comes after the first marker: it cannot move the split.
    assert split_listing(f"s\n{MARK}\n0\0x\n{MARK}\n")[0] == "s"
