"""The `Transport` protocol: how hpcfleet reaches a site.

A transport only executes: it runs a shell command string and moves files. Building the
commands (and quoting every value in them) is the job of the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# What one `get` may bring home at most, unless the caller sets its own `TransferLimits`:
# a site's stream is input, never trusted, and lands on this machine's disk.
DEFAULT_MAX_FILES = 1_000_000
DEFAULT_MAX_BYTES = 1 << 40  # 1 TiB

# What one command may print, per stream, before the transport stops reading it: every
# command's answer is read into memory, and a site's account (its `~/.bashrc`, its jobs'
# files that a listing prints) can make it as large as it likes.
MAX_COMMAND_OUTPUT = 256 << 20  # 256 MiB: a manifest of a million files fits


@dataclass(frozen=True)
class TransferLimits:
    """Caps on one download: entries (files, directories, links) and bytes of file data.
    Going over either is a `TransferError` naming the cap."""

    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command run on a site."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Transport(Protocol):
    """Run commands on a site and move files to and from it."""

    site: str

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        """Run `command` (a shell string, values already quoted) in the login shell.

        A non-zero exit is returned, not raised; failing to reach the site raises
        `SiteUnreachable`.
        """
        ...

    def put(self, local: Path, remote: str) -> None:
        """Copy a local file or directory (recursively) to `remote`, creating parents."""
        ...

    def get(self, remote: str, local: Path, *, limits: TransferLimits | None = None) -> None:
        """Copy a remote file or directory (recursively) to `local`, creating parents.
        More than `limits` (default `TransferLimits()`) raises `TransferError`."""
        ...

    def close(self) -> None:
        """Release the connection. Safe to call twice."""
        ...
