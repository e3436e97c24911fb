"""Site documents (INTERFACE.md) for the sandbox's two SLURM clusters."""

from __future__ import annotations

from typing import Any

from registry.site import SshSettings
from tests.sandbox.sandbox import SandboxSite


def slurm_site_document(
    site: SandboxSite, partner: str, *, pin: bool = True, **extra: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": site.name,
        "partner": partner,
        "description": f"sandbox SLURM cluster {site.name}",
        "ssh": {
            "host": site.host,
            "port": site.port,
            "user": site.user,
            "identity_file": str(site.key_path),
            **({"host_key": site.host_key} if pin else {}),
        },
        "scheduler": "slurm",
        "slurm": {
            "account": "sandbox",
            "partitions": [
                {"name": "cpu", "default": True, "max_time": "1-00:00:00"},
                {"name": "gpu", "gpus_per_node": 2, "max_time": "1-00:00:00"},
            ],
        },
        "environment": {"workdir": "hpcfleet"},
        "shared_with": ["*"],
        "policy": {"min_poll_interval": "1s"},
    }
    document.update(extra)
    return document


def ssh_settings(site: SandboxSite, **overrides: object) -> SshSettings:
    """`SshSettings` that reach `site` with the sandbox's key and pinned host key."""
    fields: dict[str, object] = {
        "host": site.host,
        "port": site.port,
        "user": site.user,
        "identity_file": str(site.key_path),
        "host_key": site.host_key,
    }
    fields.update(overrides)
    return SshSettings.model_validate(fields)
