"""The shell commands hpcfleet sends to a site's login shell (directories, links, the
manifest of a tree), as pure `*_command()` / `parse_*(returncode, stdout, stderr)` pairs.

Every value is quoted exactly once (`shlex.quote`). Every directory these commands
create follow the site's umask (owner-only, `umask 077`, unless `environment.umask` says
otherwise). What comes back is input, never trusted: a parser
either returns checked values or raises `BadRemoteOutput` naming the bad entry.

The manifest is THE hasher of the project (staging checks what arrived with it, and
`sites.ssh.transfer` verifies streamed trees with it). It is NUL-separated, so no file
name (which may hold a newline, never a NUL) can forge an entry:

    <size> NUL <path> NUL ... <size> NUL <path> NUL "--" NUL <hasher output>

sizes and paths from `find -printf`, then the SHA-256 of the same files in the same
order from `openssl dgst -sha256 -r` (fast) or `sha256sum`, read as digests only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from registry.site import DEFAULT_UMASK

# Picks the fastest available SHA-256 (coreutils' sha256sum has no SHA-NI: 0.9 s for
# 256 MiB here, openssl 0.2 s) and stores its words in $sha256 (split on purpose).
PICK_SHA256 = (
    "if command -v openssl >/dev/null 2>&1; "
    "then sha256='openssl dgst -sha256 -r'; else sha256='sha256sum --'; fi"
)
_SECTION_END = "--"
_DIGEST = re.compile(rb"^\\?([0-9a-f]{64}) ", re.MULTILINE)
_MANIFEST = (
    f'cd -- "$1" || exit 1; shift; {PICK_SHA256}; '
    "find -L \"$@\" -type f -printf '%s\\0%p\\0' || exit 1; "
    f"printf '%s\\0' {_SECTION_END}; "
    'find -L "$@" -type f -print0 | xargs -0 -r $sha256'
)
_MISSING = 'cd -- "$1" || exit 1; shift; for p; do [ -e "$p" ] || printf \'%s\\0\' "$p"; done'


class BadRemoteOutput(ValueError):
    """A site printed something the command does not print, or an unsafe path."""


class RemoteCommandFailed(Exception):
    """A command exited non-zero; `returncode` and `stderr` say how."""

    def __init__(self, returncode: int, stderr: str) -> None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(f"exit status {returncode}: {last}")
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class ManifestEntry:
    size: int
    sha256: str


def shell_command(script: str, *args: str) -> str:
    """`sh -c SCRIPT sh ARGS...`: values reach the script as positional parameters,
    every word quoted exactly once, never pasted into the script."""
    return shlex.join(["sh", "-c", script, "sh", *args])


def check_exit(returncode: int, stdout: str, stderr: str) -> None:
    """The parser of commands whose only answer is their exit status."""
    if returncode != 0:
        raise RemoteCommandFailed(returncode, stderr)


def umask_command(umask: str = DEFAULT_UMASK) -> str:
    """What every command that creates files on a site starts with: the site's umask
    (`environment.umask`, owner-only by default), so a project group on a shared
    /scratch sees nothing of a run unless the site says so."""
    return f"umask {shlex.quote(umask)}"


def make_dirs_command(paths: Sequence[str], *, umask: str = DEFAULT_UMASK) -> str:
    """Create `paths` and their parents under `umask`. Parser: `check_exit`."""
    return f"{umask_command(umask)} && mkdir -p -- " + " ".join(shlex.quote(p) for p in paths)


# $1 the tree to mirror, $2 where; the old $2 (a tree, or an old symlink) goes first.
_LINK_TREE = (
    'umask "$3"; rm -rf -- "$2" && mkdir -p -- "$(dirname -- "$2")" || exit 1; '
    'if cp -al -- "$1" "$2" 2>/dev/null; then echo hard-linked; '
    'else rm -rf -- "$2" && cp -a -- "$1" "$2" && echo copied; fi'
)
LINK_TREE_WAYS = ("hard-linked", "copied")


def link_tree_command(source: str, destination: str, *, umask: str = DEFAULT_UMASK) -> str:
    """Make `destination` a real directory tree with the files of `source`: hard links
    when both are on one filesystem (`cp -al`, no data copied), else a copy. A job
    then sees real directories that `find`, `os.walk` and `rglob` traverse (a symlink
    to a directory they do not enter). Parser: `parse_link_tree`."""
    return shell_command(_LINK_TREE, source, destination, umask)


def parse_link_tree(returncode: int, stdout: str, stderr: str) -> str:
    """How the tree was made: "hard-linked" or "copied"; else `BadRemoteOutput`."""
    check_exit(returncode, stdout, stderr)
    way = stdout.strip()
    if way not in LINK_TREE_WAYS:
        raise BadRemoteOutput(f"the link-tree command printed {way[:80]!r}")
    return way


def remove_tree_command(path: str) -> str:
    """Remove `path` and everything under it. Parser: `check_exit`."""
    return f"rm -rf -- {shlex.quote(path)}"


def manifest_command(directory: str, paths: Sequence[str] = ()) -> str:
    """The manifest of the regular files under `directory` (or `paths` in it), links
    followed. Parser: `parse_manifest`."""
    targets = [safe_relative_path(p.rstrip("/") or ".", allow_dot=True) for p in paths]
    return shell_command(_MANIFEST, directory, *[_not_an_option(t) for t in targets or ["."]])


def parse_manifest(returncode: int, stdout: str, stderr: str) -> dict[str, ManifestEntry]:
    """{normalised relative path: entry}. Any entry that is not a relative path inside
    the directory, repeated, or without its digest raises `BadRemoteOutput` naming it."""
    check_exit(returncode, stdout, stderr)
    listing, separator, hashed = stdout.partition(f"\0{_SECTION_END}\0")
    if not separator and stdout.startswith(f"{_SECTION_END}\0"):
        listing, hashed = "", stdout[len(_SECTION_END) + 1 :]
    elif not separator:
        raise BadRemoteOutput("the manifest is cut short (no end of the file list)")
    fields = listing.split("\0") if listing else []
    if len(fields) % 2:
        raise BadRemoteOutput(f"the manifest has an odd number of fields ({len(fields)})")
    digests = parse_digests(hashed.encode("utf-8", "surrogateescape"))
    if len(digests) != len(fields) // 2:
        raise BadRemoteOutput(
            f"the manifest lists {len(fields) // 2} files but {len(digests)} digests"
        )
    entries: dict[str, ManifestEntry] = {}
    for (size, name), digest in zip(
        zip(fields[::2], fields[1::2], strict=True), digests, strict=True
    ):
        path = safe_relative_path(name)
        if not size.isascii() or not size.isdigit():
            raise BadRemoteOutput(f"manifest entry {name!r}: size {size!r} is not a number")
        if path in entries:
            raise BadRemoteOutput(f"manifest entry {name!r} appears twice")
        entries[path] = ManifestEntry(int(size), digest)
    return entries


def missing_paths_command(directory: str, paths: Sequence[str]) -> str:
    """Which of `paths` (relative to `directory`) do not exist. Parser:
    `parse_missing_paths`."""
    return shell_command(_MISSING, directory, *[p.rstrip("/") or "." for p in paths])


def parse_missing_paths(returncode: int, stdout: str, stderr: str) -> list[str]:
    check_exit(returncode, stdout, stderr)
    return [p for p in stdout.split("\0") if p]


def workdir_writable_command(workdir: str, *, umask: str = DEFAULT_UMASK) -> str:
    """Create `workdir` (under `umask`: the first probe may be what creates it) and a
    file in it, then remove the file. Parser: `check_exit`."""
    quoted = shlex.quote(workdir)
    return (
        f"{umask_command(umask)} && mkdir -p -- {quoted} && "
        f'probe=$(mktemp -p {quoted} .hpcfleet-probe.XXXXXX) && rm -f -- "$probe"'
    )


def free_space_command(workdir: str) -> str:
    """The space free where `workdir` lives. Parser: `parse_free_kib`."""
    return f"df -Pk -- {shlex.quote(workdir)} | tail -n 1"


def parse_free_kib(returncode: int, stdout: str, stderr: str) -> int | None:
    """KiB available (the 4th column of `df -P`), or None if df gave no usable answer."""
    fields = stdout.split()
    if returncode != 0 or len(fields) < 4 or not fields[3].isascii() or not fields[3].isdigit():
        return None
    return int(fields[3])


def queue_depth_command() -> str:
    """How many jobs the login user has in the SLURM queue. Parser: `parse_queue_depth`."""
    return 'squeue --noheader --user="$(id -un)" --format=%i | wc -l'


def parse_queue_depth(returncode: int, stdout: str, stderr: str) -> int | None:
    """The count, or None if squeue gave no usable answer."""
    text = stdout.strip()
    return int(text) if returncode == 0 and text.isascii() and text.isdigit() else None


def parse_digests(output: bytes) -> list[str]:
    """SHA-256 digests, in order, from `sha256sum` or `openssl dgst -r` output."""
    return [m.group(1).decode("ascii") for m in _DIGEST.finditer(output)]


def safe_relative_path(name: str, *, allow_dot: bool = False) -> str:
    """`name` normalised (`./a//b` -> `a/b`) if it is a relative path that stays inside
    its directory; else `BadRemoteOutput` naming it."""
    if "\ufffd" in name or any(not c.isprintable() and c not in "\t\n" for c in name):
        raise BadRemoteOutput(f"path {name!r} is not plain UTF-8 text")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not (parts or allow_dot):
        raise BadRemoteOutput(f"path {name!r} is not a relative path inside the directory")
    return "/".join(parts) or "."


def _not_an_option(path: str) -> str:
    """`-x` -> `./-x`: find takes no `--` before its starting points."""
    return f"./{path}" if path.startswith("-") else path
