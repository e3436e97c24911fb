"""An OOM under `srun` on a real SLURM: the step ends OUT_OF_MEMORY, the allocation
FAILED; the scheduler reports the job OUT_OF_MEMORY (not retried, node not blamed)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from registry.site import Site
from registry.states import JobState
from sites.driver import DriverPool
from sites.scheduler import JobRequest, JobResources, TaskSpec
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

HUNGRY = 'srun python3 -c "x = bytearray(600 * 1024 * 1024)"; exit 1'


def test_oom_in_an_srun_step_is_out_of_memory(slurm_sandbox: Sandbox, tmp_path: Path) -> None:
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    pool = DriverPool(tmp_path)
    try:
        driver = pool.get(site)
        name = f"hpcfleet-{uuid.uuid4().hex[:8]}-oom-1"
        request = JobRequest(
            name=name,
            workdir=f"{driver.workdir}/{name}",
            tasks=(TaskSpec(script=HUNGRY),),
            resources=JobResources(mem_mb=100, time_seconds=120),
            log_dir=f"{driver.workdir}/{name}/logs",
        )
        job_id = driver.scheduler.submit(request)
        status = None
        for _ in range(60):  # until sacct has the job's steps (squeue cannot see them)
            status = driver.scheduler.status([job_id]).get(job_id)
            if status is not None and status.state is JobState.OUT_OF_MEMORY:
                break
            time.sleep(1)
        assert status is not None and status.state is JobState.OUT_OF_MEMORY, status
        assert "OUT_OF_MEMORY" in (status.reason or "")
    finally:
        pool.close()
