"""`LocalTransport`: the `Transport` of a site that is this machine.

Commands run under `bash -c` as child processes; "transfers" are file copies. Used by
the embedded default and by an orchestrator that runs on a site's own login node.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from sites.errors import SiteError, TransferError
from sites.transport import MAX_COMMAND_OUTPUT, CommandResult, TransferLimits

# Errors that a retry of the same call can get past (a busy or briefly unavailable
# filesystem); everything else (missing file, no permission, disk full) needs a person.
_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE}
)


def is_transient_oserror(exc: OSError) -> bool:
    """Whether retrying the operation that raised `exc` can help."""
    return exc.errno in _TRANSIENT_ERRNOS


class LocalTransport:
    """Run commands and copy files on this machine, for the site named `site`."""

    def __init__(self, site: str) -> None:
        self.site = site

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run `command` with `bash -c`; a non-zero exit is returned, not raised.

        The command gets its own session so that a timeout kills everything it started,
        not only the `bash` in front.
        """
        try:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise SiteError(
                self.site,
                f"cannot run command {command!r}: {exc}",
                transient=is_transient_oserror(exc),
            ) from exc
        try:
            stdout, stderr = _communicate(proc, stdin, timeout, MAX_COMMAND_OUTPUT)
        except subprocess.TimeoutExpired as exc:
            _kill_session(proc)
            raise SiteError(
                self.site,
                f"command {command!r} did not finish within {timeout} s",
                transient=True,
            ) from exc
        except _TooMuchOutput as exc:
            _kill_session(proc)
            raise SiteError(
                self.site,
                f"command {command!r} printed more than {exc.limit} bytes on one stream; "
                "the rest was not read",
            ) from None
        return CommandResult(
            command=command,
            returncode=proc.returncode,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )

    def put(self, local: Path, remote: str) -> None:
        """Copy file or directory `local` to the path `remote` (directories merge)."""
        self._copy(Path(local), Path(remote))

    def get(self, remote: str, local: Path, *, limits: TransferLimits | None = None) -> None:
        """Copy file or directory `remote` to the path `local` (directories merge);
        more than `limits` (entries, bytes) is refused before anything is copied."""
        _check_limits(self.site, Path(remote), limits or TransferLimits())
        self._copy(Path(remote), Path(local))

    def close(self) -> None:
        """Nothing to release."""

    def _copy(self, source: Path, target: Path) -> None:
        """Copy `source` to exactly `target` (never into it), creating parents.

        A directory is merged into an existing one; each file lands whole or not at all.
        """
        try:
            if source.is_dir():
                if _same_or_inside(target, source):
                    if target.resolve() == source.resolve():
                        return
                    raise TransferError(
                        self.site, f"cannot copy directory {source} into itself ({target})"
                    )
                _copy_tree(source, target)
            else:
                if target.is_dir():
                    raise TransferError(
                        self.site, f"cannot copy file {source} to {target}: it is a directory"
                    )
                if target.exists() and os.path.samefile(source, target):
                    return
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(source, target)
        except OSError as exc:
            raise TransferError(
                self.site,
                f"cannot copy {source} to {target}: {exc}",
                transient=is_transient_oserror(exc),
            ) from exc


def _copy_file(source: str | Path, target: str | Path) -> None:
    """Copy one file with its mode and times via a temporary file next to the target,
    so that a reader never sees half a file."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_limits(site: str, source: Path, limits: TransferLimits) -> None:
    entries, size = (1, source.stat().st_size) if source.is_file() else (0, 0)
    for directory, dirnames, filenames in os.walk(source) if source.is_dir() else ():
        entries += len(dirnames) + len(filenames)
        size += sum(os.lstat(os.path.join(directory, name)).st_size for name in filenames)
        if entries > limits.max_files or size > limits.max_bytes:
            break
    if entries > limits.max_files or size > limits.max_bytes:
        raise TransferError(
            site,
            f"{source}: more than {limits.max_files} entries or {limits.max_bytes} bytes "
            f"(caps max_files/max_bytes; counted {entries} entries, {size} bytes)",
        )


def _copy_tree(source: Path, target: Path) -> None:
    """Merge directory `source` into `target`. Symlinks are copied as links, as the
    SSH transport's tar streams carry them; a file or link replaces its namesake."""
    made: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(source):
        into = target / Path(directory).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        made.append((directory, into))
        for name in [*dirnames, *filenames]:  # a link to a directory is in dirnames
            path = Path(directory, name)
            if path.is_symlink():
                _copy_link(path, into / name)
            elif name in filenames:
                _copy_file(path, into / name)
    for directory, into in reversed(made):  # last: a read-only directory is filled first
        shutil.copystat(directory, into)


def _copy_link(source: Path, target: Path) -> None:
    """Copy symlink `source` (not what it points to) to `target`, replacing it at once."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    os.symlink(os.readlink(source), temporary)
    try:
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink()
        raise


def _same_or_inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


class _TooMuchOutput(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _CappedReader(threading.Thread):
    """Reads one pipe to its end, keeping at most `limit` bytes; past that it stops and
    sets `over` (the caller kills the command)."""

    def __init__(self, pipe: IO[bytes], limit: int, over: threading.Event) -> None:
        super().__init__(name="local-command-reader", daemon=True)
        self.pipe, self.limit, self.over = pipe, limit, over
        self.chunks: list[bytes] = []

    def run(self) -> None:
        size = 0
        fd = self.pipe.fileno()
        while chunk := os.read(fd, 1 << 16):
            size += len(chunk)
            if size > self.limit:
                self.over.set()
                return
            self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


def _communicate(
    proc: subprocess.Popen[bytes], stdin: bytes | None, timeout: float | None, limit: int
) -> tuple[bytes, bytes]:
    """`proc.communicate(stdin, timeout)` that keeps at most `limit` bytes per stream:
    raises `_TooMuchOutput` past it, `subprocess.TimeoutExpired` at the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    over = threading.Event()
    readers = [_CappedReader(proc.stdout, limit, over), _CappedReader(proc.stderr, limit, over)]
    for reader in readers:
        reader.start()
    if proc.stdin is not None:
        writer = threading.Thread(target=_feed, args=(proc.stdin, stdin or b""), daemon=True)
        writer.start()
    for reader in readers:
        while reader.is_alive() and not over.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0)
            reader.join(0.05 if remaining is None else min(0.05, remaining))
        if over.is_set():
            raise _TooMuchOutput(limit)
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    proc.wait(remaining)
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()
    return readers[0].value(), readers[1].value()


def _feed(pipe: IO[bytes], data: bytes) -> None:
    # A command that exits without reading its input closes the pipe: not an error.
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group of a command that ran too long or printed too much, and
    reap it. Its pipes stay with the reader threads: they end when the last writer is
    gone (a grandchild that left the group may hold them a while)."""
    # The leader is our unreaped child, so its pid (= the group id) cannot be reused yet.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
