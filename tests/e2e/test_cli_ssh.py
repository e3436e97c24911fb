"""`hpcfleet site show NAME --resolved`: the effective SSH connection, text and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, cli_env, write_yaml

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM8HrxlyUhlcatX7YGh93FKQ/6xRO5BG/GaJ0zb0j2ZG"
FINGERPRINT = "SHA256:9jmBY6qYu7558MZRTZhiOVkOaq9Ew1SwoUiTkPEhzOU"


def test_site_show_resolved_prints_the_connection_like_ssh_g(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cineca", "--name", "CINECA").returncode == 0
    document = write_yaml(
        tmp_path / "leonardo.yaml",
        {
            "name": "leonardo",
            "partner": "cineca",
            "scheduler": "slurm",
            "ssh": {
                "host": "LOGIN.Leonardo.cineca.it",
                "user": "jdoe",
                "identity_file": "/keys/id_ed25519",
                "certificate_file": str(tmp_path / "missing-cert.pub"),
                "proxy_jump": ["gate@bastion.cineca.it:2222"],
                "host_keys": [HOST_KEY],
            },
            "slurm": {"partitions": [{"name": "boost_usr_prod"}]},
        },
    )
    assert cli(env, "site", "add", str(document), "--as", "cineca").returncode == 0

    text = cli(env, "site", "show", "leonardo", "--resolved")
    shown = cli(env, "site", "show", "leonardo", "--resolved", "--json")

    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:4] == [
        "host LOGIN.Leonardo.cineca.it",
        "hostname login.leonardo.cineca.it",
        "port 22",
        "user jdoe",
    ]
    assert "proxyjump gate@bastion.cineca.it:2222" in text.stdout
    assert f"hostkey pinned ssh-ed25519 {FINGERPRINT}" in text.stdout
    assert f"certificatefile {tmp_path / 'missing-cert.pub'} (not found)" in text.stdout
    resolved = json.loads(shown.stdout)
    assert resolved["identityfile"] == ["/keys/id_ed25519"]
    assert resolved["proxyjump"] == ["gate@bastion.cineca.it:2222"]
    assert resolved["hostkeypolicy"] == {
        "pinned": [f"ssh-ed25519 {FINGERPRINT}"],
        "ca": None,
        "known_hosts": None,
    }
