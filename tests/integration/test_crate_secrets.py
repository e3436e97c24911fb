"""Nothing secret goes into a provenance crate: canary values in every place a secret
can live (an identity file, an S3 profile and endpoint, env names that say secret, URLs
with passwords, a stage's env) and none of them reaches the crate's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.crate import write_crate
from flows.launch import launch
from flows.provenance import gather
from registry import manifests
from registry.site import Site
from registry.states import JobState
from registry.store import Store, now
from sites.driver import DriverPool, SiteDriver
from sites.errors import SiteUnreachable
from tests.helpers import consortium, local_site, write_yaml

CANARY = "canary-0b5e1d"
# Built at run time: the repository holds no key-like line, not even a fake one.
KEY_HEADER = "-----BEGIN " + "OPENSSH PRIVATE KEY-----"


def test_no_canary_reaches_the_crate(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'registry.db'}")
    consortium(store)
    identity = tmp_path / "id_ed25519"
    identity.write_text(f"{KEY_HEADER}\n{CANARY}\n")
    # Secret-named variables (HF_TOKEN, DB_PASSWORD...) are refused in documents
    # (registry.env_secrets); what a document may still hold is a URL with a password.
    env = {
        "MIRROR": f"https://reader:{CANARY}@mirror.example.org/pypi",
        "SIGNED": f"https://s3.example.org/b/k?X-Amz-Signature={CANARY}&x=1",
        "HF_HOME": "/scratch/hf",
    }
    slurm = Site.model_validate(
        {
            "name": "hpc",
            "partner": "cuni",
            "scheduler": "slurm",
            "shared_with": ["*"],
            "labels": {"country": "CZ"},
            "ssh": {"host": "127.0.0.1", "port": 1, "identity_file": str(identity)},
            "slurm": {"partitions": [{"name": "cpu"}]},
            "environment": {"env": env},
            "storage": {
                "s3": {
                    "endpoint": f"https://key:{CANARY}@s3.example.org",
                    "bucket": "bucket",
                    "profile": f"profile-{CANARY}",
                }
            },
        }
    )
    store.put_site(slurm, "cuni")
    store.put_site(local_site("site-a", "cuni", environment={"env": env}), "cuni")
    spec = {
        "name": "secrets",
        "stages": [
            {"name": "a", "site": "site-a", "env": {"PIP_INDEX_URL": f"https://u:{CANARY}@pypi.example.org/simple"}, "command": ["true"]},
            {"name": "b", "site": "hpc", "needs": ["a"], "command": ["true"]},
        ],
    }
    run_id = launch(store, write_yaml(tmp_path / "run.yaml", spec), "cuni").run.run_id
    for stage, site in (("a", "site-a"), ("b", "hpc")):
        store.update_stage(run_id, stage, sites=[site])
        [job] = store.add_jobs([_job(run_id, stage, site)])
    # A failed job's last words quote a URL with its password.
    store.update_job(job.id, state=JobState.FAILED, reason=f"fetch https://u:{CANARY}@h/x: 401")
    manifests.put_outputs(store, run_id, "a", "site-a", 1, {"out.txt": (3, "0" * 64)})

    pool = DriverPool(tmp_path / "sites")

    def driver_for(site: Site) -> SiteDriver:
        if site.ssh is not None:  # no SSH here: the crate must still be written
            raise SiteUnreachable(site.name, "not in this test", transient=True)
        return pool.get(site)

    try:
        facts = gather(store, run_id, driver_for=driver_for)
    finally:
        pool.close()
    crate = write_crate(facts, tmp_path / "crate")
    assert any("site hpc" in note for note in facts.notes)
    script = (crate / "scripts" / "a" / "site-a-attempt-1.sh").read_text()
    assert "HF_HOME" in script and "PIP_INDEX_URL" in script
    written = "".join(p.read_text(errors="replace") for p in crate.rglob("*") if p.is_file())
    assert CANARY not in written
    assert "reader:***@mirror.example.org" in written and "/scratch/hf" in written
    assert "fetch https://u:***@h/x: 401" in written


def _job(run_id: str, stage: str, site: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "stage": stage,
        "attempt": 1,
        "site": site,
        "job_name": f"hpcfleet-{run_id}-{stage}-1",
        "scheduler_id": "4242",
        "array_index": None,
        "array_value": None,
        "state": JobState.COMPLETED,
        "started": now(),
        "ended": now(),
        "node": "n1",
    }


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("HF_TOKEN", "x", None),
        ("WANDB_API_KEY", "x", None),
        ("HF_TOKEN_PATH", "/home/me/.hf", "/home/me/.hf"),
        ("TOKENIZERS_PARALLELISM", "false", "false"),
        ("URL", "https://u:pw@h/x", "https://u:***@h/x"),
        ("URL", "https://h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
        ("BLOB", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z", None),
    ],
)
def test_public_values(name: str, value: str, shown: str | None) -> None:
    from flows.redaction import public_value

    assert public_value(name, value) == shown
