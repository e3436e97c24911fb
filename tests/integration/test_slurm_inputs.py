"""Same-site inputs are real directories (issue: a job ran `find "$HPCFLEET_INPUTS"
-name model.txt` and found nothing behind a symlink). A real SLURM job walks its inputs
with `find`, `os.walk` and `rglob`: one input hard-linked on the same filesystem, one
copied from another filesystem (/dev/shm, a tmpfs)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from flows.layout import StageLayout
from flows.staging import run_checked, stage_input
from registry.site import Site
from sites import remote
from sites.driver import DriverPool, SiteDriver
from sites.scheduler import JobRequest, TaskSpec
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = pytest.mark.slurm

WALK = """
import json, os, pathlib, subprocess
inputs = os.environ["HPCFLEET_INPUTS"]
found = subprocess.run(["find", inputs, "-name", "model.txt"], capture_output=True, text=True)
walked = [os.path.join(d, f) for d, _, fs in os.walk(inputs) for f in fs if f == "model.txt"]
globbed = [str(p) for p in pathlib.Path(inputs).rglob("model.txt")]
print(json.dumps({"find": sorted(found.stdout.split()), "walk": sorted(walked),
                  "rglob": sorted(globbed)}))
"""


def produce(driver: SiteDriver, layout: StageLayout) -> None:
    outputs = f"{layout.outputs}/checkpoints/iter_1"
    run_checked(driver, remote.make_dirs_command([outputs]))
    run_checked(driver, remote.shell_command('echo weights > "$1/model.txt"', outputs))


def wait_final(driver: SiteDriver, job_id: str) -> str:
    for _ in range(120):
        status = driver.scheduler.status([job_id]).get(job_id)
        if status is not None and status.state.is_final:
            return status.state.value
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end")


def test_same_site_inputs_are_walkable_directories_in_a_slurm_job(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    site = Site.model_validate(slurm_site_document(slurm_sandbox.site("site-a"), "cuni"))
    pool = DriverPool(tmp_path)
    run_id = f"in{uuid.uuid4().hex[:8]}"
    elsewhere = f"/dev/shm/hpcfleet-test-{run_id}"
    try:
        driver = pool.get(site)
        train = StageLayout(driver.workdir, run_id, "train")
        prep = StageLayout(elsewhere, run_id, "prep")  # another filesystem
        evaluate = StageLayout(driver.workdir, run_id, "evaluate")
        produce(driver, train)
        produce(driver, prep)

        assert stage_input(driver, train, driver, evaluate) == "hard-linked (same site)"
        assert stage_input(driver, prep, driver, evaluate) == "copied (same site)"
        # Staged again (a retry): replaced, not nested.
        assert stage_input(driver, train, driver, evaluate) == "hard-linked (same site)"

        request = JobRequest(
            name=f"hpcfleet-{run_id}-evaluate-1",
            workdir=evaluate.work,
            tasks=(TaskSpec(argv=("python3", "-c", WALK)),),
            env={"HPCFLEET_INPUTS": evaluate.inputs},
            log_dir=evaluate.logs(1),
        )
        job_id = driver.scheduler.submit(request)
        assert wait_final(driver, job_id) == "COMPLETED"
        seen = json.loads(run_checked(driver, f"cat -- {request.stdout_path(0)}"))
        expected = sorted(
            f"{evaluate.inputs}/{stage}/checkpoints/iter_1/model.txt" for stage in ("prep", "train")
        )
        assert seen == {"find": expected, "walk": expected, "rglob": expected}
        # The hard-linked file is the producer's (no data copied); the copy is not.
        inodes = run_checked(
            driver,
            remote.shell_command(
                'stat -c %i "$1" "$2" "$3" "$4"',
                f"{train.outputs}/checkpoints/iter_1/model.txt",
                f"{evaluate.inputs}/train/checkpoints/iter_1/model.txt",
                f"{prep.outputs}/checkpoints/iter_1/model.txt",
                f"{evaluate.inputs}/prep/checkpoints/iter_1/model.txt",
            ),
        ).split()
        assert inodes[0] == inodes[1] and inodes[2] != inodes[3]
    finally:
        try:
            run_checked(pool.get(site), remote.remove_tree_command(elsewhere))
        finally:
            pool.close()
