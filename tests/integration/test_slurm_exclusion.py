"""Retries avoid the node that failed, unless that leaves the job nowhere to run."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.submission import submit_once
from registry.site import Site
from sites.driver import DriverPool
from sites.errors import SchedulerError
from sites.scheduler import JobRequest, TaskSpec
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm


def test_excluding_the_only_node_falls_back_to_no_exclusion(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    pool = DriverPool(tmp_path)
    try:
        driver = pool.get(site)
        node = driver.transport.run("sinfo --noheader --format=%N").stdout.strip()
        request = JobRequest(
            name=f"hpcfleet-{uuid.uuid4().hex[:8]}-exclusion-1",
            workdir=driver.workdir,
            tasks=(TaskSpec(argv=("true",)),),
            log_dir=f"{driver.workdir}/exclusion-test",
            exclude_nodes=(node,),
        )
        with pytest.raises(SchedulerError, match="node configuration is not available") as info:
            driver.scheduler.submit(request)
        assert info.value.transient is False
        job_id = submit_once(driver, request)
        # A refused sbatch still leaves a FAILED (BadConstraints) record under the name;
        # the job that counts is the one submitted without the exclusion.
        found = {s.job_id: s for s in driver.scheduler.find_by_name(request.name)}
        assert found[job_id].state.value in ("PENDING", "RUNNING", "COMPLETED")
        refused = [s for s in found.values() if s.job_id != job_id]
        assert refused and all("BadConstraints" in (s.reason or "") for s in refused)
    finally:
        pool.close()
