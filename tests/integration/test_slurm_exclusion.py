"""Retries avoid the node that failed, unless that leaves the job nowhere to run."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flows.stage_runner import _submit_once
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
        job_id = _submit_once(driver, request)
        [status] = driver.scheduler.find_by_name(request.name)
        assert status.job_id == job_id  # submitted once, without the exclusion
    finally:
        pool.close()
