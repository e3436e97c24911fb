"""From a registered `Site` to something that can be driven: its transport, its
scheduler and its work directory, opened once per site per process and shared.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.owner_only import private_dir
from registry.site import Site
from sites.errors import SiteError
from sites.routing import WhereScheduler
from sites.scheduler import JobRequest, Scheduler
from sites.transport import Transport

if TYPE_CHECKING:  # the local scheduler is imported where a local site is opened
    from sites.local.scheduler import LocalScheduler


@dataclass
class SiteDriver:
    """A site, opened: how to reach it, how to run jobs on it, where to put files."""

    site: Site
    transport: Transport
    scheduler: Scheduler
    workdir: str  # absolute path on the site

    @property
    def name(self) -> str:
        return self.site.name

    @property
    def batch_scheduler(self) -> Scheduler:
        """The site's own scheduler (SLURM's, or the local one), without login tasks."""
        if isinstance(self.scheduler, WhereScheduler):
            return self.scheduler.batch
        return self.scheduler

    @property
    def is_local_machine(self) -> bool:
        """True when the site's files are this machine's files (no SSH)."""
        return self.site.ssh is None


def local_workdir(site: Site, default_root: Path) -> str:
    """The work dir of a site on this machine; created owner-only when missing."""
    configured = site.environment.workdir
    if configured is None:
        path = (default_root / site.name).resolve()
    else:
        path = Path(os.path.expandvars(os.path.expanduser(configured))).resolve()
    # A work dir that cannot be made here is reported by the step that needs it.
    with contextlib.suppress(OSError):
        private_dir(path)
    return str(path)


def remote_workdir(site: Site, transport: Transport) -> str:
    """Absolute work dir on an SSH site; relative paths and ~ are under the login home."""
    configured = site.environment.workdir or "hpcfleet"
    if configured.startswith("/"):
        return configured
    result = transport.run('printf %s "$HOME"')
    if not result.ok or not result.stdout.startswith("/"):
        raise SiteError(site.name, f"cannot resolve the home directory: {result.stderr.strip()}")
    relative = configured.removeprefix("~").lstrip("/") or "."
    return f"{result.stdout.rstrip('/')}/{relative}"


def local_scheduler(site: Site, workdir: str, *, login: bool = False) -> LocalScheduler:
    """The scheduler of a `scheduler: local` site whose work dir is `workdir`; with
    `login`, the one of its `where: login` stages: a local job, online."""
    from sites.local.scheduler import LocalScheduler
    from sites.login.scheduler import login_environment

    slots = site.local.slots if site.local else 2
    environment = login_environment(site.environment) if login else site.environment
    return LocalScheduler(site.name, Path(workdir), slots, environment=environment)


def render_job_script(site: Site, request: JobRequest, workdir: str) -> str:
    """The script `site`'s scheduler would submit for `request` (pure: no connection),
    for `run launch --dry-run` and provenance crates."""
    if request.where == "login" and site.slurm is not None:
        from sites.login.scheduler import render_login_script

        return render_login_script(request, site.environment)
    if site.slurm is not None:
        from sites.slurm.script import render_sbatch

        return render_sbatch(request, site.slurm, site.environment)
    return local_scheduler(site, workdir, login=request.where == "login").render(request)


def open_driver(site: Site, default_root: Path) -> SiteDriver:
    """Open a driver for `site` (no connection is made for local sites)."""
    if site.scheduler == "local":
        from sites.local.transport import LocalTransport

        workdir = local_workdir(site, default_root)
        # Both keep their jobs under the same root: one id space, one set of slots.
        scheduler = WhereScheduler(
            local_scheduler(site, workdir),
            local_scheduler(site, workdir, login=True),
            is_login_id=None,
        )
        return SiteDriver(site, LocalTransport(site.name), scheduler, workdir)

    from sites.login.commands import is_login_job_id
    from sites.login.scheduler import LoginScheduler
    from sites.slurm.scheduler import SlurmScheduler

    transport: Transport
    if site.ssh is None:
        from sites.local.transport import LocalTransport

        transport = LocalTransport(site.name)
        workdir = local_workdir(site, default_root)
    else:
        from sites.ssh.transport import SshTransport

        transport = SshTransport(site.name, site.ssh)  # shares the site's one connection
        workdir = remote_workdir(site, transport)
    assert site.slurm is not None  # the Site model guarantees it for scheduler 'slurm'
    slurm_scheduler = SlurmScheduler(site.name, transport, site.slurm, site.environment)
    login_scheduler = LoginScheduler(
        site.name,
        transport,  # the same connection: a login task costs no new login
        workdir,
        slots=site.policy.login_tasks,
        environment=site.environment,
    )
    scheduler = WhereScheduler(slurm_scheduler, login_scheduler, is_login_id=is_login_job_id)
    return SiteDriver(site, transport, scheduler, workdir)


class DriverPool:
    """One driver per site for the whole process (one SSH connection per site)."""

    def __init__(self, default_root: Path) -> None:
        self._default_root = default_root
        self._drivers: dict[str, SiteDriver] = {}
        self._lock = threading.Lock()

    def get(self, site: Site) -> SiteDriver:
        with self._lock:
            driver = self._drivers.get(site.name)
            if driver is None or driver.site != site:
                driver = open_driver(site, self._default_root)
                self._drivers[site.name] = driver
            return driver

    def close(self) -> None:
        with self._lock:
            for driver in self._drivers.values():
                driver.transport.close()
            self._drivers.clear()
