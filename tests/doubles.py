"""Test doubles of the `Transport` protocol, in one place.

`RecordingTransport` records every call it gets and answers each command from a script
of replies (`CommandResult`s, or functions of the call), falling back to a real
transport it wraps, if any:

    transport = RecordingTransport({"sbatch": ok("42\\n"), "scancel": fail("...")})
    spy = RecordingTransport(wrapped=SshTransport(...))        # records, then forwards

Scripted replies are for pure unit tests of the code that builds commands and parses
their output (outputs recorded from a real site under tests/data/); a wrapped real
transport is for integration tests that also check which commands went out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sites.transport import CommandResult, Transport


@dataclass(frozen=True)
class Call:
    """One `run` call as the transport received it."""

    command: str
    stdin: bytes | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Transfer:
    """One `put` ("put", local, remote) or `get` ("get", remote, local) call."""

    direction: str
    source: str
    target: str


Reply = CommandResult | Callable[[Call], CommandResult]


def ok(stdout: str = "", command: str = "") -> CommandResult:
    """A command that succeeded with `stdout`."""
    return CommandResult(command, 0, stdout, "")


def fail(stderr: str, returncode: int = 1, command: str = "") -> CommandResult:
    """A command that exited `returncode` with `stderr`."""
    return CommandResult(command, returncode, "", stderr)


@dataclass
class RecordingTransport:
    """A `Transport` that records calls and answers commands from `replies`.

    A command gets the reply of the first key (in insertion order) that occurs in it;
    with no matching key it goes to `wrapped`, or gets `default`; with neither the test
    fails naming the command. Transfers go to `wrapped` when there is one.
    """

    replies: Mapping[str, Reply] = field(default_factory=dict)
    site: str = "fake-site"
    wrapped: Transport | None = None
    default: Reply | None = None
    calls: list[Call] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    closed: int = 0

    @property
    def commands(self) -> list[str]:
        return [call.command for call in self.calls]

    @property
    def stdins(self) -> list[bytes | None]:
        return [call.stdin for call in self.calls]

    def run(
        self, command: str, *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        call = Call(command, stdin, timeout)
        self.calls.append(call)
        return self.answer(call)

    def answer(self, call: Call) -> CommandResult:
        """The reply to `call` (not recorded: for replies built from other replies)."""
        for key, reply in self.replies.items():
            if key in call.command:
                return _resolve(reply, call)
        if self.wrapped is not None:
            return self.wrapped.run(call.command, stdin=call.stdin, timeout=call.timeout)
        if self.default is not None:
            return _resolve(self.default, call)
        raise AssertionError(f"unexpected command {call.command!r}")

    def put(self, local: Path, remote: str) -> None:
        self.transfers.append(Transfer("put", str(local), remote))
        if self.wrapped is not None:
            self.wrapped.put(local, remote)

    def get(self, remote: str, local: Path) -> None:
        self.transfers.append(Transfer("get", remote, str(local)))
        if self.wrapped is not None:
            self.wrapped.get(remote, local)

    def close(self) -> None:
        self.closed += 1
        if self.wrapped is not None and self.closed == 1:
            self.wrapped.close()


def _resolve(reply: Reply, call: Call) -> CommandResult:
    """The reply's result, naming the command it answers."""
    result = reply(call) if callable(reply) else reply
    return result if result.command else replace(result, command=call.command)
