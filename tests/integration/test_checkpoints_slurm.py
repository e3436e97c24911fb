"""Checkpoints found by the site watcher on the real SLURM sandbox, over SSH: each poll
is ONE command (sacct, squeue and the checkpoint listing together), over the site's
one login, and each checkpoint is handed over once, hashed as written."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator

import pytest

from flows.watcher import SiteWatcher
from registry.site import Environment, Partition, Site, SlurmSettings
from sites.checkpoints import CheckpointWatch, FoundCheckpoint
from sites.driver import SiteDriver
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.slurm.scheduler import SlurmScheduler
from sites.ssh.transport import ConnectionPool, SshTransport
from tests.doubles import RecordingTransport
from tests.sandbox.documents import slurm_site_document, ssh_settings
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

SITE = "site-a"
SETTINGS = SlurmSettings(account="sandbox", partitions=[Partition(name="cpu", default=True)])
WRITE_CHECKPOINTS = """
for step in 1 2; do
  sleep 2
  mkdir -p "$OUT/checkpoints/iter_$step"
  echo "ready $step" > "$OUT/checkpoints/iter_$step/model.safetensors"
done
sleep 2
"""


@pytest.fixture
def workdir(slurm_sandbox: Sandbox) -> Iterator[str]:
    path = f"{slurm_sandbox.site(SITE).home}/checkpoint-watch-test/{uuid.uuid4().hex[:8]}"
    yield path
    slurm_sandbox.run_on(SITE, ["rm", "-rf", "--", path])


def test_one_command_per_poll_finds_each_checkpoint_once(
    slurm_sandbox: Sandbox, workdir: str
) -> None:
    sandbox_site = slurm_sandbox.site(SITE)
    pool = ConnectionPool()
    ssh = SshTransport(SITE, ssh_settings(sandbox_site), pool=pool)
    counted = RecordingTransport(site=SITE, wrapped=ssh)  # passes every command on
    site = Site.model_validate(slurm_site_document(sandbox_site, "cuni"))
    driver = SiteDriver(
        site, counted, SlurmScheduler(SITE, counted, SETTINGS, Environment()), workdir
    )
    outputs = f"{workdir}/outputs"
    request = JobRequest(
        name=f"hpcfleet-test-{uuid.uuid4().hex[:8]}-train-1",
        workdir=workdir,
        log_dir=f"{workdir}/logs",
        tasks=(TaskSpec(script=WRITE_CHECKPOINTS),),
        env={"OUT": outputs},
        resources=JobResources(time_seconds=300),
    )
    found: list[FoundCheckpoint] = []
    lock = threading.Lock()

    def on_found(checkpoint: FoundCheckpoint) -> None:
        with lock:
            found.append(checkpoint)

    watcher = SiteWatcher(driver, interval=1.0)
    try:
        job_id = driver.scheduler.submit(request)
        before = len(counted.calls)
        watcher.watch_checkpoints(
            "run/train",
            CheckpointWatch(outputs, "checkpoints", "iter_*", "model.safetensors"),
            on_found,
        )
        watcher.track([job_id])
        watcher.wait(lambda s: job_id in s and s[job_id].state.is_final, timeout=120)
        # Every command since the job was tracked is one poll, and nothing else.
        polls = watcher.polls
        assert polls >= 3
        commands = counted.commands[before:]
        assert len(commands) == polls or len(commands) == polls + 1  # one may be in flight
        assert all("sacct" in c and "squeue" in c and "model.safetensors" in c for c in commands)
        assert ssh.connection.logins == 1
    finally:
        watcher.close()
        ssh.close()
        pool.close_all()
    # Seen once each, in the poll that saw the job end at the latest, hashed as written.
    assert [(c.name, c.path) for c in found] == [
        ("iter_1", "checkpoints/iter_1"),
        ("iter_2", "checkpoints/iter_2"),
    ]
    for c in found:
        assert c.sha256 == hashlib.sha256(f"ready {c.name[-1]}\n".encode()).hexdigest()
    # Hashed once: after the first sighting the command tells the site not to hash it.
    assert any("checkpoints/iter_1/" in c for c in commands)
