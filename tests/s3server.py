"""A real S3 API server on loopback (moto's standalone server) for tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "hpcfleet-test-access"
SECRET_KEY = "hpcfleet-test-secret"  # a throwaway credential of the throwaway server


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    profile: str
    credentials_file: Path
    config_file: Path

    def env(self) -> dict[str, str]:
        return {
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_CONFIG_FILE": str(self.config_file),
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s3_server(directory: Path, profile: str = "site-store") -> Iterator[S3Server]:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    log = (directory / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        credentials = directory / "aws-credentials"
        credentials.write_text(
            f"[{profile}]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        config = directory / "aws-config"
        config.write_text(f"[profile {profile}]\nregion = us-east-1\n")
        yield S3Server(f"http://127.0.0.1:{port}", profile, credentials, config)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
