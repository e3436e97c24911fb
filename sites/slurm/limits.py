"""Reading an sbatch refusal for a job submit limit: the user already has as many jobs
queued as a QOS or association allows. Pure; `scheduler_error` turns it into
`SubmitLimitReached`, which `flows.submission` waits out instead of failing the job.
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
