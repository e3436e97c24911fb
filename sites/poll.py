"""One poll of a site: the status of its jobs and, in the SAME command, the checkpoints
of its running stages (`sites.checkpoints`).

A SLURM site (over SSH or on this machine) answers both in one round trip
(`SlurmScheduler.status_and`). A local site reads its jobs' state files and lists the
checkpoints with the same command run on this machine: no login involved either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sites.checkpoints import (
    CheckpointListing,
    CheckpointWatch,
    checkpoints_command,
    parse_checkpoints,
)
from sites.driver import SiteDriver
from sites.scheduler import JobStatus


def poll_site(
    driver: SiteDriver,
    job_ids: Sequence[str],
    watches: Sequence[CheckpointWatch] = (),
    known: Iterable[str] = (),
) -> tuple[dict[str, JobStatus], CheckpointListing | None]:
    """Statuses of `job_ids` and the checkpoints of `watches` (None without watches, or
    when the listing's answer did not come back). `known`: keys hashed before."""
    if not watches:
        return driver.scheduler.status(job_ids), None
    listing_command = checkpoints_command(watches, known)
    status_and = getattr(driver.scheduler, "status_and", None)
    if status_and is not None:
        statuses, output = status_and(job_ids, listing_command)
    else:
        statuses = driver.scheduler.status(job_ids)
        result = driver.transport.run(listing_command)
        output = result.stdout if result.ok else None
    return statuses, None if output is None else parse_checkpoints(output, watches)
