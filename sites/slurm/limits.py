"""Reading SLURM's limits where it names them. Pure.

- An sbatch refusal for a job submit limit: the user already has as many jobs queued
  as a QOS or association allows. `scheduler_error` turns it into `SubmitLimitReached`,
  which `flows.submission` waits out instead of failing the job.
- A pending job's Reason that means it will never start as submitted (`never_starts`):
  its request is over a per-job maximum. Without the QOS flag `DenyOnLimit`, sbatch
  accepts such a job and it stays PENDING for ever (slurm.schedmd.com/
  job_reason_codes.html: "QOSMax* — a portion of the job request exceeds a maximum
  limit (e.g., PerJob, PerNode) for the requested QOS").
"""

from __future__ import annotations

import re

# The reasons sbatch prints (slurm.h's job_reason_string) when a QOS or association caps
# the jobs a user or account may have queued.
SUBMIT_LIMITS = (
    "QOSMaxSubmitJobPerUserLimit",
    "QOSMaxSubmitJobPerAccountLimit",
    "AssocMaxSubmitJobLimit",
    "AssocGrpSubmitJobsLimit",
    "QOSGrpSubmitJobsLimit",
)
# Part of ESLURM_ACCOUNTING_POLICY's text, which sbatch prints for every policy refusal.
_SUBMIT_LIMIT_TEXT = "job submit limit"
_LIMIT_NAME = re.compile(r"\b(?:QOS|Assoc)\w*Limit\b")


def submit_limit(output: str) -> str | None:
    """The submit limit a refused sbatch names, or None when it was refused for
    something else.

    sbatch prints the limit's name (QOSMaxSubmitJobPerUserLimit), then one message for
    every accounting-policy refusal: "Job violates accounting/QOS policy (job submit
    limit, user's size and/or time limits)". So another limit's name (a wall time, a
    node count) means a refusal for good; only without any name does that message
    alone count as a submit limit.
    """
    names = _LIMIT_NAME.findall(output)
    if names:
        return next((n for n in names if n in SUBMIT_LIMITS), None)
    return _SUBMIT_LIMIT_TEXT if _SUBMIT_LIMIT_TEXT in output.lower() else None


# Reasons of a pending job that only a change of the job's request (or of the site's
# limits, by its admins) can end. Aggregate limits (QOSGrp*, AssocGrp*, MaxJobsPerUser,
# ...) pass when other jobs end, and PartitionNodeLimit also stands for DOWN nodes: none
# of those is here.
_PER_JOB_LIMIT = re.compile(r"^(?:QOS|Assoc)Max\w*PerJob(?:Limit)?$")
_NEVER_STARTS = {
    "PartitionTimeLimit": "its time limit is over the partition's MaxTime",
    "InvalidQOS": "its QOS is not valid for this account or partition",
    "InvalidAccount": "its account is not valid",
    "BadConstraints": "no node can satisfy its constraints",
}


def never_starts(reason: str) -> str | None:
    """Why SLURM will never start a job PENDING for `reason` (squeue's or sacct's
    Reason; a "PENDING (Reason)" text is read too), or None when it may still start."""
    match = re.search(r"\((\w+)\)\s*$", reason)
    code = match.group(1) if match else reason.strip()
    if code in _NEVER_STARTS:
        return f"SLURM will never start it as submitted ({code}): {_NEVER_STARTS[code]}"
    if _PER_JOB_LIMIT.match(code):
        what = "QOS's" if code.startswith("QOS") else "association's"
        return (
            f"SLURM will never start it as submitted ({code}): its request is over the "
            f"{what} per-job limit; ask for less (resources.time, nodes, gpus) or another qos"
        )
    return None
