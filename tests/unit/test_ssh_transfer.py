"""Pure parts of the SSH transfers: digest parsing, command quoting, safe tar extraction."""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from pathlib import Path

import pytest

from sites.errors import TransferError
from sites.ssh.transfer import parse_digests, receive_tree, shell_command

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


def test_a_tar_stream_is_extracted_and_hashed(tmp_path: Path) -> None:
    stream = _tar(
        _file("./a.txt", b"hello"), _file("./sub/b.bin", b"\0\1\2"), _link("./l", "a.txt")
    )

    received = receive_tree("lumi", stream, tmp_path / "out")

    assert (tmp_path / "out/a.txt").read_bytes() == b"hello"
    assert (tmp_path / "out/sub/b.bin").read_bytes() == b"\0\1\2"
    assert (tmp_path / "out/l").readlink() == Path("a.txt")
    assert [(f.name, f.sha256) for f in received] == [
        ("./a.txt", hashlib.sha256(b"hello").hexdigest()),
        ("./sub/b.bin", hashlib.sha256(b"\0\1\2").hexdigest()),
    ]


@pytest.mark.parametrize(
    "members",
    [
        [_file("../escape.txt", b"x")],
        [_file("./sub/../../escape.txt", b"x")],
        [_link("./out-link", "/etc")],
        [_link("./up", ".."), _file("./up/escape.txt", b"x")],
    ],
    ids=["dotdot", "nested-dotdot", "absolute-link", "write-through-link"],
)
def test_a_hostile_tar_stream_cannot_write_outside_the_destination(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    destination = tmp_path / "deep" / "out"

    with pytest.raises(TransferError, match="refused archive entry"):
        receive_tree("lumi", _tar(*members), destination)

    outside = [p for p in tmp_path.rglob("*") if destination not in (p, *p.parents)]
    assert sorted(p.name for p in outside) == ["deep"]


def test_absolute_names_land_inside_the_destination(tmp_path: Path) -> None:
    receive_tree("lumi", _tar(_file("/abs/file.txt", b"x")), tmp_path / "out")

    assert (tmp_path / "out/abs/file.txt").read_bytes() == b"x"
