"""Reading and writing one exec channel without deadlocking it.

The server stops sending when the channel window (2 MiB, shared by stdout and stderr)
is full, and paramiko only reopens it when we read. So stdout and stderr are always
read together (selector on the channel), and input is written while a helper thread
reads, never before.
"""

from __future__ import annotations

import selectors
import threading
import time
from dataclasses import dataclass

import paramiko

from sites.transport import MAX_COMMAND_OUTPUT

READ_SIZE = 1 << 20
EXIT_STATUS_MISSING = -1  # paramiko's value when the server sent no exit-status


@dataclass(frozen=True)
class ChannelOutput:
    """What a finished command produced. `exit_status` is -1 when the server sent none:
    the command died by a signal, or (`connection_lost`) the connection went away
    before the channel ended, so the command may or may not have completed."""

    exit_status: int
    stdout: bytes
    stderr: bytes
    connection_lost: bool = False


class CommandTimeout(TimeoutError):
    """The command did not finish before its deadline."""


class OutputTooLarge(Exception):
    """The command printed more than the reader's cap on one stream."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the command printed more than {limit} bytes on one stream")
        self.limit = limit


def read_all(
    channel: paramiko.Channel,
    deadline: float | None = None,
    max_output: int | None = None,
) -> ChannelOutput:
    """Read stdout and stderr until EOF, then the exit status. Raises `CommandTimeout`
    when `deadline` (a `time.monotonic()` value) passes first, `OutputTooLarge` when
    either stream goes over `max_output` bytes (default `MAX_COMMAND_OUTPUT`)."""
    limit = MAX_COMMAND_OUTPUT if max_output is None else max_output
    stdout = _Capped(limit)
    stderr = _Capped(limit)
    with selectors.DefaultSelector() as selector:
        selector.register(channel, selectors.EVENT_READ)
        while True:
            _drain(channel, stdout, stderr)
            if channel.eof_received or channel.closed:
                _drain(channel, stdout, stderr)
                break
            if not selector.select(_remaining(deadline)) and _expired(deadline):
                raise CommandTimeout("the command did not finish before its time-out")
    if not channel.status_event.wait(_remaining(deadline)):
        raise CommandTimeout("the command did not finish before its time-out")
    # A channel that ends normally sends EOF first; a dead connection just closes it.
    lost = channel.exit_status == EXIT_STATUS_MISSING and not channel.eof_received
    return ChannelOutput(channel.exit_status, stdout.value(), stderr.value(), lost)


def send_all(channel: paramiko.Channel, data: bytes, deadline: float | None = None) -> None:
    """Send `data` then EOF, while `read_all` runs on another thread."""
    if data:
        channel.settimeout(_remaining(deadline))
        send_bytes(channel, data)
    channel.shutdown_write()


def send_bytes(channel: paramiko.Channel, data: bytes) -> None:
    """`channel.sendall(data)` in linear time: paramiko's sendall re-slices the whole
    remaining buffer after every packet, which is quadratic in len(data) (measured:
    a quarter of an upload's time went to it with 1 MiB buffers)."""
    # paramiko puts at most (the peer's maximum packet - 64) bytes in one packet.
    piece = max(1024, channel.out_max_packet_size - 64)
    view = memoryview(data)
    for offset in range(0, len(view), piece):
        channel.sendall(view[offset : offset + piece].tobytes())


class BackgroundReader:
    """`read_all` on a helper thread, so that the caller can write to the channel."""

    def __init__(self, channel: paramiko.Channel, deadline: float | None = None) -> None:
        self._channel = channel
        self._deadline = deadline
        self._result: ChannelOutput | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ssh-channel-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = read_all(self._channel, self._deadline)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> ChannelOutput:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class _Capped:
    """Chunks of one stream, refusing to grow past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []

    def append(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise OutputTooLarge(self.limit)
        self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


def _drain(channel: paramiko.Channel, stdout: _Capped, stderr: _Capped) -> None:
    while channel.recv_ready():
        stdout.append(channel.recv(READ_SIZE))
    while channel.recv_stderr_ready():
        stderr.append(channel.recv_stderr(READ_SIZE))


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
