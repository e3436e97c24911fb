"""The one place where paramiko and socket errors become `sites.errors`.

Rule of thumb for `transient`: anything that a later retry can cure (time-outs, refused
or reset connections, an sshd that closed the connection, a full channel table) is
transient; anything that needs a person (authentication, host keys, incompatible
algorithms, a missing file) is not.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from sites.errors import HostKeyRejected, SiteError, SiteUnreachable, TransferError
from sites.ssh.channel import OutputTooLarge

# Errors raised by the local or remote file system during a transfer: never transient.
_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
_PERMANENT_SOCKET_ERRNOS = {errno.EACCES, errno.EPERM, errno.EAFNOSUPPORT}


def translate_ssh_error(site: str, exc: BaseException, action: str) -> SiteError | None:
    """The project error for `exc` raised while doing `action` on `site`, or None when
    `exc` is not an SSH/network/file error (a bug, which must propagate unchanged)."""
    if isinstance(exc, SiteError):
        return exc
    what = f"{action}: {_describe(exc)}"
    if isinstance(exc, OutputTooLarge):
        # What the site prints is its to choose; asking again gets the same answer.
        return SiteError(site, f"{what}; the rest was not read", transient=False)
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyRejected(site, what)
    if isinstance(exc, paramiko.AuthenticationException):
        return SiteUnreachable(site, what, transient=False)
    if isinstance(exc, IncompatiblePeer):
        return SiteUnreachable(site, what, transient=False)
    if isinstance(exc, paramiko.ChannelException):
        # "Connect failed" on a session: the server's MaxSessions; on a ProxyJump hop:
        # the next host did not answer. Both can pass.
        return SiteUnreachable(site, what, transient=True)
    if isinstance(exc, paramiko.SSHException):
        return SiteUnreachable(site, what, transient=True)
    if isinstance(exc, _FILE_ERRORS):
        return TransferError(site, what, transient=False)
    if isinstance(exc, socket.gaierror):
        permanent = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))
        return SiteUnreachable(site, what, transient=not permanent)
    if isinstance(exc, EOFError | TimeoutError | ConnectionError):
        return SiteUnreachable(site, what, transient=True)
    if isinstance(exc, OSError):
        return SiteUnreachable(site, what, transient=exc.errno not in _PERMANENT_SOCKET_ERRNOS)
    return None


@contextmanager
def ssh_errors(site: str, action: str) -> Iterator[None]:
    """Translate SSH, socket and file errors raised inside the block (see module doc)."""
    try:
        yield
    except BaseException as exc:
        translated = translate_ssh_error(site, exc, action)
        if translated is None or translated is exc:
            raise
        raise translated from exc


def _describe(exc: BaseException) -> str:
    """A short, human description of a backend error (type names only when needed)."""
    if isinstance(exc, TimeoutError | socket.timeout) and not str(exc):
        return "timed out"
    if isinstance(exc, EOFError) and not str(exc):
        return "the server closed the connection"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, paramiko.ChannelException):
        return f"the server refused to open a channel ({exc.text})"
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
