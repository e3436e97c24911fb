"""Errors raised while driving a site. Backend errors (paramiko, socket, SLURM, boto3,
subprocess) are translated into these at the boundary that calls the backend.

    HpcfleetError (registry.errors)
    └── SiteError                     a site-side operation failed
        ├── SiteUnreachable           exit 4; cannot log in / connection lost (transient)
        │   ├── HostKeyRejected       the server's host key is unknown or changed (not transient)
        │   └── CredentialsExpired    the user certificate expired: wait for its renewal (transient)
        ├── CommandFailed             a command on the site exited non-zero
        ├── SchedulerError            the scheduler refused or failed (transient if it timed out)
        │   └── SubmitLimitReached    the user's QOS/association job submit limit is reached
        └── TransferError             a file transfer failed or arrived corrupt

`transient` on each instance says whether retrying the same call can help.
"""

from __future__ import annotations

from datetime import datetime

from registry.errors import HpcfleetError


class SiteError(HpcfleetError):
    """Something went wrong on (or on the way to) a site."""

    def __init__(self, site: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"site {site!r}: {message}", transient=transient)
        self.site = site


class SiteUnreachable(SiteError):
    """The site cannot be reached or logged in to."""

    exit_code = 4

    def __init__(self, site: str, message: str, *, transient: bool = True) -> None:
        super().__init__(site, message, transient=transient)


class HostKeyRejected(SiteUnreachable):
    """The host key offered by the server is not the pinned one. Never transient."""

    def __init__(self, site: str, message: str) -> None:
        super().__init__(site, message, transient=False)


class CredentialsExpired(SiteUnreachable):
    """The short-lived user certificate for a site has expired (Leonardo: 12 h, CSCS:
    24 h). Transient, and with no time limit: whoever renews it (`step ssh login`)
    lets every waiting stage continue; nothing fails or is resubmitted meanwhile."""

    RENEW_HINT = "renew them, e.g. `step ssh login`"

    def __init__(self, site: str, expired_at: datetime, certificate: str = "") -> None:
        super().__init__(site, "", transient=True)
        where = f" (certificate {certificate})" if certificate else ""
        self.message = (
            f"credentials for site {site} expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC"
            f"{where}: {self.RENEW_HINT}"
        )
        self.args = (self.message,)
        self.expired_at = expired_at
        self.certificate = certificate

    def __reduce__(self) -> tuple[type[CredentialsExpired], tuple[str, datetime, str]]:
        return (type(self), (self.site, self.expired_at, self.certificate))


class CommandFailed(SiteError):
    """A command on the site exited non-zero."""

    def __init__(
        self, site: str, command: str, returncode: int, stderr: str, *, transient: bool = False
    ) -> None:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(
            site, f"command {command!r} exited {returncode}: {detail}", transient=transient
        )
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class SchedulerError(SiteError):
    """The site's scheduler refused or failed an operation."""


class SubmitLimitReached(SchedulerError):
    """The site refused a submission only because the user already has as many jobs
    queued as a QOS or association allows: not a failure of the job; it can be
    submitted again once jobs leave the queue. `limit` names SLURM's limit."""

    def __init__(self, site: str, message: str, limit: str) -> None:
        super().__init__(site, message, transient=False)
        self.limit = limit


class TransferError(SiteError):
    """A file transfer to, from or between sites failed or arrived corrupt."""
