"""Extract a tar stream that came from a site, trusting nothing in it.

The stream is whatever `tar` prints in the site account, and the site's own jobs can
change that (`~/.bashrc`, `PATH`). Python's `tarfile.data_filter` is not enough: it
checks each member against `os.path.realpath`, which gives up on paths longer than
PATH_MAX and on links created later in the same stream (CVE-2025-4517 and relatives;
the Python in use, 3.11.7, has no fix). So the extraction here never asks where a path
*resolves*; it makes sure that no write can go through a link at all:

- every member name must be relative, without `..`, and normalised here;
- every directory on the way is opened with `O_NOFOLLOW` relative to its parent's
  descriptor, so a symlink anywhere on the path (from the stream or already on disk)
  is refused instead of followed;
- files are created new (`O_CREAT | O_EXCL | O_NOFOLLOW`), never written through an
  existing name;
- symlinks are created last, only with relative targets that stay inside the tree,
  and after that every link's resolution is checked once more (a chain of links);
- hard links may only point at a file this stream wrote; devices, FIFOs and anything
  else are refused;
- a cap on members and on bytes bounds what a site can make us store.

Any refusal is a `TransferError` naming the member. What was extracted before it stays
(the callers extract into a fresh directory and remove it on failure).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from sites.errors import TransferError
from sites.ssh.channel import READ_SIZE
from sites.transport import TransferLimits

# Directory modes are applied after extraction; until then we must be able to write.
_WORKING_DIR_MODE = 0o700
# As tarfile's "data" filter: no setuid/setgid/sticky, no group/other write.
_KEPT_MODE_BITS = 0o755
_MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class StreamedFile:
    """A regular file carried by a tar stream: its name in the archive and SHA-256."""

    name: str
    sha256: str


class RefusedMember(Exception):
    """A member that cannot be extracted safely; `str()` says why."""


@dataclass
class _Extraction:
    root_fd: int
    limits: TransferLimits
    files: list[StreamedFile] = field(default_factory=list)
    written: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> sha256
    # path -> (target, member name); created last, the last member of a name wins
    symlinks: dict[tuple[str, ...], tuple[str, str]] = field(default_factory=dict)
    dir_modes: dict[tuple[str, ...], int] = field(default_factory=dict)
    members: int = 0
    size: int = 0


def extract_tree(
    site: str, stream: object, local: Path, limits: TransferLimits | None = None
) -> list[StreamedFile]:
    """Extract the tar `stream` (anything with `read(n)`) under `local` and return the
    regular files written, in stream order, with their SHA-256."""
    local.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(local, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    job = _Extraction(root_fd, limits or TransferLimits())
    try:
        with tarfile.open(fileobj=cast(BinaryIO, stream), mode="r|", bufsize=READ_SIZE) as archive:
            for member in archive:
                with _refusals(site, member.name):
                    _extract_member(job, archive, member)
        for parts, (_, name) in job.symlinks.items():
            with _refusals(site, name):
                _check_resolution(job.symlinks, parts)
        for parts, (target, name) in job.symlinks.items():
            with _refusals(site, name):
                _make_symlink(job.root_fd, parts, target)
        for parts, mode in sorted(job.dir_modes.items(), key=lambda item: -len(item[0])):
            with _refusals(site, "/".join(parts)), _parent_dir(job.root_fd, (*parts, ".")) as fd:
                os.fchmod(fd, mode)
    except tarfile.TarError as exc:
        raise TransferError(site, f"the tar stream is damaged: {exc}", transient=True) from exc
    finally:
        os.close(root_fd)
    return job.files


def member_parts(name: str) -> tuple[str, ...]:
    """The components of a member name, normalised; refuses absolute names and `..`."""
    if name.startswith("/"):
        raise RefusedMember("absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise RefusedMember("'..' in the path")
    return parts


@contextmanager
def _refusals(site: str, name: str) -> Iterator[None]:
    try:
        yield
    except RefusedMember as exc:
        raise TransferError(site, f"refused archive member {name!r}: {exc}") from None
    except OSError as exc:  # disk full, permissions: not the stream's fault
        detail = exc.strerror or str(exc)
        raise TransferError(site, f"cannot extract archive member {name!r}: {detail}") from None


def _extract_member(job: _Extraction, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    parts = member_parts(member.name)
    job.members += 1
    job.symlinks.pop(parts, None)
    if job.members > job.limits.max_files:
        raise RefusedMember(
            f"more than {job.limits.max_files} entries (cap max_files={job.limits.max_files})"
        )
    if member.isdir():
        if parts:
            _make_dirs(job.root_fd, parts)
            job.dir_modes[parts] = (member.mode & _KEPT_MODE_BITS) | _WORKING_DIR_MODE
    elif not parts:
        raise RefusedMember("names the destination itself")
    elif member.isreg():
        job.size += member.size
        if job.size > job.limits.max_bytes:
            raise RefusedMember(
                f"the stream holds more than {job.limits.max_bytes} bytes "
                f"(cap max_bytes={job.limits.max_bytes}, reached {job.size})"
            )
        digest = _write_file(job.root_fd, parts, archive, member)
        job.written[parts] = digest
        job.files.append(StreamedFile(member.name, digest))
    elif member.islnk():
        digest = _make_hard_link(job, parts, member.linkname)
        job.written[parts] = digest
        job.files.append(StreamedFile(member.name, digest))
    elif member.issym():
        _check_symlink_target(parts, member.linkname)
        job.symlinks[parts] = (member.linkname, member.name)
    else:
        raise RefusedMember("not a regular file, directory or link (device, FIFO, ...)")


def _write_file(
    root_fd: int, parts: tuple[str, ...], archive: tarfile.TarFile, member: tarfile.TarInfo
) -> str:
    source = archive.extractfile(member)
    digest = hashlib.sha256()
    with _parent_dir(root_fd, parts) as parent:
        _remove_non_directory(parent, parts[-1])
        fd = os.open(parts[-1], _CREATE_FILE, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as sink:
            while source is not None and (chunk := source.read(READ_SIZE)):
                digest.update(chunk)
                sink.write(chunk)
            os.fchmod(sink.fileno(), member.mode & _KEPT_MODE_BITS)
            os.utime(sink.fileno(), (member.mtime, member.mtime))
    return digest.hexdigest()


def _make_hard_link(job: _Extraction, parts: tuple[str, ...], linkname: str) -> str:
    source = member_parts(linkname)
    digest = job.written.get(source)
    if digest is None:
        raise RefusedMember(f"hard link to {linkname!r}, which is not a file of this stream")
    with _parent_dir(job.root_fd, source) as source_dir, _parent_dir(job.root_fd, parts) as parent:
        _remove_non_directory(parent, parts[-1])
        os.link(
            source[-1], parts[-1], src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False
        )
    return digest


def _check_symlink_target(parts: tuple[str, ...], target: str) -> None:
    if not target or target.startswith("/"):
        raise RefusedMember(f"symlink to {target!r}: only relative targets are kept")
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], target) if parts[:-1] else target)
    if resolved == ".." or resolved.startswith("../"):
        raise RefusedMember(f"symlink to {target!r} points outside the destination")


def _make_symlink(root_fd: int, parts: tuple[str, ...], target: str) -> None:
    with _parent_dir(root_fd, parts) as parent:
        _remove_non_directory(parent, parts[-1])
        os.symlink(target, parts[-1], dir_fd=parent)


def _check_resolution(
    links: dict[tuple[str, ...], tuple[str, str]], parts: tuple[str, ...]
) -> None:
    """Resolve `parts` through the stream's links, on paper: each link may point inside
    and a chain of them still lead out (`a -> b/c/../..` with `b/c -> .`). Not
    `os.path.realpath`, which gives up silently on paths longer than PATH_MAX."""
    pending = list(parts)
    resolved: list[str] = []
    hops = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if not resolved:
                raise RefusedMember("a chain of links leads outside the destination")
            resolved.pop()
            continue
        resolved.append(name)
        link = links.get(tuple(resolved))
        if link is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise RefusedMember(f"more than {_MAX_LINK_HOPS} links in a chain")
            resolved.pop()
            pending[:0] = [p for p in link[0].split("/") if p not in ("", ".")]


def _make_dirs(root_fd: int, parts: tuple[str, ...]) -> None:
    with _parent_dir(root_fd, (*parts, ".")):
        pass


@contextmanager
def _parent_dir(root_fd: int, parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor of the directory holding `parts[-1]`, each directory on the way
    opened without following links (and created, owner-only, where missing)."""
    current = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            try:
                following = os.open(name, _OPEN_DIR, dir_fd=current)
            except FileNotFoundError:
                os.mkdir(name, _WORKING_DIR_MODE, dir_fd=current)
                following = os.open(name, _OPEN_DIR, dir_fd=current)
            except OSError as exc:
                raise RefusedMember(f"{name!r} on its path is not a directory") from exc
            os.close(current)
            current = following
        yield current
    finally:
        os.close(current)


def _remove_non_directory(parent: int, name: str) -> None:
    """Make room for a new file or link (a new inode: never write through a link)."""
    try:
        existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(existing.st_mode):
        raise RefusedMember("a directory of that name exists")
    os.unlink(name, dir_fd=parent)
