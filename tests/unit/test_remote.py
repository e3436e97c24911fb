"""The site commands of `sites.remote`: parsers against output recorded on the sandbox
(tests/data/remote/recorded, made by tests/data/remote/record.py), hostile variants,
and the commands themselves run by a local `sh`."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sites import remote
from sites.remote import BadRemoteOutput, ManifestEntry, RemoteCommandFailed
from sites.s3.handoff import FileUpload
from sites.s3.scripts import render_download, render_upload

RECORDED = Path(__file__).resolve().parents[1] / "data" / "remote" / "recorded"
A = "a" * 64


def recorded(name: str) -> tuple[int, str, str]:
    return (
        int((RECORDED / f"{name}.rc").read_text()),
        (RECORDED / f"{name}.stdout").read_text(),
        (RECORDED / f"{name}.stderr").read_text(),
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_recorded_manifest_gives_sizes_and_digests_of_every_file() -> None:
    entries = remote.parse_manifest(*recorded("manifest_tree"))

    assert entries == {
        "a.txt": ManifestEntry(5, sha(b"hello")),
        "link": ManifestEntry(5, sha(b"hello")),  # links are followed
        "-dash": ManifestEntry(4, sha(b"dash")),
        "sub/empty.bin": ManifestEntry(0, sha(b"")),
        "sub/it is.txt": ManifestEntry(10, sha(b"with space")),
    }


def test_a_recorded_manifest_of_chosen_paths_and_of_an_empty_tree() -> None:
    assert set(remote.parse_manifest(*recorded("manifest_tree_paths"))) == {
        "a.txt",
        "sub/empty.bin",
        "sub/it is.txt",
    }
    assert remote.parse_manifest(*recorded("manifest_empty")) == {}


def test_a_file_name_with_a_newline_cannot_forge_a_manifest_entry() -> None:
    # A directory named "x\n5 000…0 ../other-stage/model.bin" once forged a line.
    entries = remote.parse_manifest(*recorded("manifest_forged"))

    assert "../other-stage/model.bin" not in entries
    assert entries["model.bin"] == ManifestEntry(5, sha(b"model"))
    forged_dir = "x\n5 " + "0" * 64 + " ../other-stage/model.bin"
    assert entries[f"{forged_dir}/f"] == ManifestEntry(4, sha(b"real"))
    assert len(entries) == 2


def test_a_manifest_of_a_missing_directory_is_a_failed_command() -> None:
    with pytest.raises(RemoteCommandFailed, match="can't cd"):
        remote.parse_manifest(*recorded("manifest_missing_dir"))


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        (f"5\0../other-stage/model.bin\0--\0{A} *x\n", "'../other-stage/model.bin'"),
        (f"5\0/etc/passwd\0--\0{A} *x\n", "'/etc/passwd'"),
        (f"5\0./a/../../b\0--\0{A} *x\n", "'./a/../../b'"),
        ("5\0./a\0", "cut short"),
        ("5\0./a\0--\0", "1 files but 0 digests"),
        (f"5\0./a\0--\0{A} *a\n{A} *b\n", "1 files but 2 digests"),
        (f"5\0./a\0x\0--\0{A} *a\n", "odd number"),
        (f"5\x00./a\x005\x00a\x00--\x00{A} *a\n{A} *a\n", "appears twice"),
        (f"-1\0./a\0--\0{A} *a\n", "size '-1'"),
        (f"5\0./caf\ufffd\0--\0{A} *a\n", "not plain UTF-8"),
    ],
    ids=[
        "outside",
        "absolute",
        "dotdot-inside",
        "cut",
        "no-digest",
        "extra-digest",
        "odd",
        "twice",
        "size",
        "not-utf8",
    ],
)
def test_a_hostile_manifest_is_refused_naming_the_entry(stdout: str, problem: str) -> None:
    with pytest.raises(BadRemoteOutput, match=re.escape(problem)):
        remote.parse_manifest(0, stdout, "")


def test_the_manifest_command_round_trips_hostile_names_through_a_real_shell(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "it's a $(dir)"
    names = ["plain", "new\nline", "-dash", "sp ace/inner", "x\n5 " + "0" * 64 + " ../y"]
    for index, name in enumerate(names):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(bytes([index]) * index)
    command = remote.manifest_command(str(tree))

    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    entries = remote.parse_manifest(result.returncode, result.stdout, result.stderr)

    assert entries == {
        name: ManifestEntry(index, sha(bytes([index]) * index)) for index, name in enumerate(names)
    }


def test_missing_paths_come_back_as_given() -> None:
    assert remote.parse_missing_paths(*recorded("missing_paths")) == ["nope", "it's gone"]


def test_queue_depth_and_free_space_are_numbers_or_none() -> None:
    assert remote.parse_queue_depth(*recorded("queue_depth")) == 0
    assert remote.parse_queue_depth(0, "squeue: error\n", "") is None
    assert remote.parse_queue_depth(1, "3\n", "") is None
    assert (remote.parse_free_kib(*recorded("free_space")) or 0) > 0
    assert remote.parse_free_kib(0, "Filesystem 1K-blocks\n", "") is None


def test_directories_the_commands_create_follow_the_site_umask(tmp_path: Path) -> None:
    hostile = str(tmp_path / "a b" / "$(touch pwned)")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    tree = str(tmp_path / "inputs" / "stage")
    commands = [
        remote.make_dirs_command([hostile]),
        remote.link_tree_command(str(tmp_path / "src"), tree),
        remote.workdir_writable_command(str(tmp_path / "work")),
        remote.make_dirs_command([str(tmp_path / "group")], umask="027"),
    ]

    for command in commands:
        subprocess.run(["sh", "-c", f"umask 022; {command}"], check=True, cwd=tmp_path)

    for path in (tmp_path / "a b", Path(hostile), tmp_path / "inputs", tmp_path / "work"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert (tmp_path / "group").stat().st_mode & 0o777 == 0o750
    assert (Path(tree) / "f").read_text() == "x"
    assert not (tmp_path / "pwned").exists()


def test_every_value_is_quoted_exactly_once() -> None:
    value = "it's $(x) `y` ; *"

    assert shlex.split(remote.make_dirs_command([value]))[-1] == value
    assert shlex.split(remote.remove_tree_command(value)) == ["rm", "-rf", "--", value]
    assert shlex.split(remote.manifest_command(value))[4] == value


def test_s3_scripts_refuse_paths_that_leave_the_directory() -> None:
    for path in ("../other-stage/model.bin", "/etc/passwd", "a/../../b", "./a"):
        with pytest.raises(ValueError, match="relative path"):
            render_download("dest", {path: "https://example.invalid/x"})
        with pytest.raises(ValueError, match="relative path"):
            render_upload("src", [FileUpload(path, "k", 1, put_url="https://example.invalid/x")])


def test_s3_scripts_pass_paths_as_dot_slash_so_none_reads_as_an_option_or_stdin() -> None:
    script = render_download("dest", {"-": "https://example.invalid/x"})

    assert "-o ./- " in script


def test_link_tree_is_real_directories_of_hard_links_or_a_copy(tmp_path: Path) -> None:
    source = tmp_path / "out $(touch pwned)"
    (source / "deep").mkdir(parents=True)
    (source / "deep" / "model.txt").write_text("w")
    target = tmp_path / "inputs" / "train"
    result = subprocess.run(
        ["sh", "-c", f"umask 022; {remote.link_tree_command(str(source), str(target))}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert remote.parse_link_tree(result.returncode, result.stdout, result.stderr) == (
        "hard-linked"
    )
    staged = target / "deep" / "model.txt"
    assert (
        not target.is_symlink()
        and staged.stat().st_ino == (source / "deep" / "model.txt").stat().st_ino
    )
    assert (tmp_path / "inputs").stat().st_mode & 0o777 == 0o700
    assert not (tmp_path / "pwned").exists()
    assert remote.parse_link_tree(0, "copied\n", "") == "copied"
    with pytest.raises(remote.BadRemoteOutput):
        remote.parse_link_tree(0, "linked to /etc\n", "")
    with pytest.raises(remote.RemoteCommandFailed):
        remote.parse_link_tree(1, "", "cp: cannot stat 'x': No such file or directory\n")
