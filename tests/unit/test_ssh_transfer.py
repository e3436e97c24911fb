"""Pure parts of the SSH transfers: digest parsing, command quoting, safe tar extraction."""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import tarfile
from pathlib import Path

import pytest

from sites.errors import TransferError
from sites.remote import parse_digests, shell_command
from sites.ssh.untar import extract_tree
from sites.transport import TransferLimits

A = "a" * 64
B = "0123456789abcdef" * 4


def test_parse_digests_reads_openssl_and_coreutils_output() -> None:
    openssl = f"{A} *./x\n{B} *./dir/y z\n".encode()
    coreutils = f"{A}  ./x\n\\{B}  ./new\\nline\n".encode()  # escaped name: leading "\"

    assert parse_digests(openssl) == [A, B]
    assert parse_digests(coreutils) == [A, B]


def test_parse_digests_ignores_other_lines() -> None:
    assert parse_digests(b"tar: warning\n" + f"{A} *f\n".encode() + b"short *f\n") == [A]


def test_shell_command_passes_values_as_positional_parameters() -> None:
    hostile = 'it\'s $(rm -rf ~) `x` "y" ; *'

    words = shlex.split(shell_command('cat -- "$1"', hostile))

    assert words == ["sh", "-c", 'cat -- "$1"', "sh", hostile]


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_a_tar_stream_is_extracted_and_hashed(tmp_path: Path) -> None:
    stream = _tar(
        _file("./a.txt", b"hello"),
        _file("./sub/b.bin", b"\0\1\2"),
        _link("./l", "a.txt"),
        _special("./hard", tarfile.LNKTYPE, "./a.txt"),
    )

    received = extract_tree("lumi", stream, tmp_path / "out")

    assert (tmp_path / "out/a.txt").read_bytes() == b"hello"
    assert (tmp_path / "out/sub/b.bin").read_bytes() == b"\0\1\2"
    assert (tmp_path / "out/l").readlink() == Path("a.txt")
    assert (tmp_path / "out/hard").read_bytes() == b"hello"
    assert [(f.name, f.sha256) for f in received] == [
        ("./a.txt", hashlib.sha256(b"hello").hexdigest()),
        ("./sub/b.bin", hashlib.sha256(b"\0\1\2").hexdigest()),
        ("./hard", hashlib.sha256(b"hello").hexdigest()),
    ]


def _path_max_escape(target_file: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """CVE-2025-4517: links whose expansion exceeds PATH_MAX, so that realpath() stops
    resolving them and `tarfile.data_filter` believes `escape` points inside."""
    component, steps = "d" * 247, "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = step_path = ""
    for step in steps:
        members += [_dir(os.path.join(path, component)), _link(os.path.join(path, step), component)]
        path, step_path = os.path.join(path, component), os.path.join(step_path, step)
    long_link = os.path.join(step_path, "l" * 254)
    members.append(_link(long_link, "../" * len(steps)))
    members.append(_link("escape", long_link + "/.." * (len(steps) + 1)))
    members.append(_file("escape" + target_file, b"pwned"))
    return members


HOSTILE_STREAMS = {
    "dotdot": [_file("../escape.txt", b"x")],
    "nested-dotdot": [_file("./sub/../../escape.txt", b"x")],
    "absolute-name": [_file("/abs/escape.txt", b"x")],
    "absolute-link": [_link("./out-link", "/etc")],
    "relative-link-out": [_link("./up", "../..")],
    "write-through-link": [_link("./inside", "sub"), _dir("./sub"), _file("./inside/x", b"x")],
    "chain-of-links": [_link("./esc", "p/q/../.."), _dir("./p"), _link("./p/q", ".")],
    "hard-link-out": [_special("./h", tarfile.LNKTYPE, "/etc/passwd")],
    "hard-link-up": [_special("./h", tarfile.LNKTYPE, "../escape.txt")],
    "hard-link-to-unknown": [_special("./h", tarfile.LNKTYPE, "./never-sent")],
    "device": [_special("./null", tarfile.CHRTYPE)],
    "fifo": [_special("./pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("members", HOSTILE_STREAMS.values(), ids=HOSTILE_STREAMS.keys())
def test_a_hostile_tar_stream_is_refused_naming_the_member(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    destination = tmp_path / "deep" / "out"

    with pytest.raises(TransferError, match="refused archive member '"):
        extract_tree("lumi", _tar(*members), destination)

    outside = [p for p in tmp_path.rglob("*") if destination not in (p, *p.parents)]
    assert sorted(p.name for p in outside) == ["deep"]
    assert not any(p.is_symlink() for p in destination.rglob("*"))


def test_the_path_max_link_trick_cannot_write_outside(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "pwned.txt"
    target.parent.mkdir()

    with pytest.raises(TransferError, match="refused archive member '"):
        extract_tree("lumi", _tar(*_path_max_escape(str(target))), tmp_path / "dest")

    assert not target.exists()


def test_a_symlink_already_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "logs").symlink_to(tmp_path / "outside")

    with pytest.raises(TransferError, match=r"'logs/0\.out'.*not a directory"):
        extract_tree("lumi", _tar(_file("logs/0.out", b"x")), tmp_path / "dest")

    assert list((tmp_path / "outside").iterdir()) == []


def test_a_file_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("keep")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").symlink_to(tmp_path / "outside.txt")

    extract_tree("lumi", _tar(_file("f", b"new")), tmp_path / "dest")

    assert (tmp_path / "outside.txt").read_text() == "keep"
    assert (tmp_path / "dest" / "f").read_bytes() == b"new"


def test_setuid_and_group_write_bits_are_dropped(tmp_path: Path) -> None:
    info, data = _file("tool", b"#!/bin/sh\n")
    info.mode = 0o6777

    extract_tree("lumi", _tar((info, data)), tmp_path)

    assert (tmp_path / "tool").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    ("limits", "cap"),
    [(TransferLimits(max_files=2), "max_files=2"), (TransferLimits(max_bytes=10), "max_bytes=10")],
)
def test_a_stream_over_the_caps_is_refused_naming_the_cap(
    tmp_path: Path, limits: TransferLimits, cap: str
) -> None:
    stream = _tar(_file("a", b"123456"), _file("b", b"123456"), _file("c", b"1"))

    with pytest.raises(TransferError, match=cap):
        extract_tree("lumi", stream, tmp_path, limits)
