"""Translation of paramiko / socket / file errors into sites.errors (no network)."""

from __future__ import annotations

import base64
import socket

import paramiko
import pytest
from paramiko.ssh_exception import IncompatiblePeer

from sites.errors import HostKeyRejected, SiteError, SiteUnreachable, TransferError
from sites.ssh.errors import ssh_errors, translate_ssh_error


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        EOFError(),
        OSError(113, "No route to host"),
        paramiko.SSHException("Error reading SSH protocol banner"),
        paramiko.SSHException("Timeout opening channel."),
        paramiko.ChannelException(2, "Connect failed"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_network_failures_are_transient_unreachable(error: BaseException) -> None:
    translated = translate_ssh_error("lumi", error, "running 'true'")

    assert type(translated) is SiteUnreachable
    assert translated.transient is True
    assert str(translated).startswith("site 'lumi': running 'true': ")


@pytest.mark.parametrize(
    "error",
    [
        paramiko.AuthenticationException("Authentication failed."),
        paramiko.BadAuthenticationType("Bad authentication type", ["password"]),
        IncompatiblePeer("Incompatible ssh peer (no acceptable kex algorithm)"),
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failures_that_need_a_person_are_not_transient(error: BaseException) -> None:
    translated = translate_ssh_error("lumi", error, "connecting")

    assert isinstance(translated, SiteUnreachable)
    assert translated.transient is False


def test_a_bad_host_key_is_a_host_key_rejection() -> None:
    blob = base64.b64decode("AAAAC3NzaC1lZDI1NTE5AAAAIKbHneZ0fi9aIDt4BDwmag4ucq18eW/lOqNeNqevuaah")
    key = paramiko.PKey.from_type_string("ssh-ed25519", blob)

    translated = translate_ssh_error("lumi", paramiko.BadHostKeyException("h", key, key), "x")

    assert isinstance(translated, HostKeyRejected)
    assert translated.transient is False


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file"), PermissionError(13, "no")])
def test_file_errors_are_permanent_transfer_errors(error: OSError) -> None:
    translated = translate_ssh_error("lumi", error, "uploading a")

    assert isinstance(translated, TransferError)
    assert translated.transient is False


def test_project_errors_pass_unchanged() -> None:
    original = SiteError("lumi", "already translated")

    assert translate_ssh_error("lumi", original, "x") is original


def test_programming_errors_are_not_translated() -> None:
    assert translate_ssh_error("lumi", ValueError("bug"), "x") is None
    assert translate_ssh_error("lumi", KeyboardInterrupt(), "x") is None


def test_the_context_manager_raises_the_translation_with_its_cause() -> None:
    with pytest.raises(SiteUnreachable) as caught, ssh_errors("lumi", "connecting to h:22"):
        raise ConnectionRefusedError(111, "Connection refused")

    assert str(caught.value) == "site 'lumi': connecting to h:22: connection refused"
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_the_context_manager_lets_bugs_through() -> None:
    with pytest.raises(ZeroDivisionError), ssh_errors("lumi", "x"):
        1 / 0  # noqa: B018
