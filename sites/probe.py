"""`site check`: probe a site and say, check by check, whether it can run jobs.

The results are stored (registry probes) so that the dashboard shows site health
without ever opening a connection itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.records import ProbeRecord
from registry.site import Site
from registry.store import now
from sites import remote
from sites.driver import DriverPool, SiteDriver
from sites.errors import SiteError, SiteUnreachable

MIN_FREE_GIB = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ProbeResult:
    site: str
    reachable: bool
    checks: list[Check] = field(default_factory=list)
    queue_depth: int | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and all(c.ok for c in self.checks)

    def record(self) -> ProbeRecord:
        return ProbeRecord(
            site=self.site,
            checked_at=now(),
            reachable=self.reachable,
            ok=self.ok,
            queue_depth=self.queue_depth,
            details={"checks": [c.__dict__ for c in self.checks]},
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "reachable": self.reachable,
            "ok": self.ok,
            "queue_depth": self.queue_depth,
            "checks": [c.__dict__ for c in self.checks],
        }


def probe_site(site: Site, pool: DriverPool) -> ProbeResult:
    """Run every check that applies to `site`; unreachable sites stop at the login."""
    result = ProbeResult(site.name, reachable=True)
    try:
        driver = pool.get(site)
        login = driver.transport.run("true")
        if not login.ok:
            raise SiteUnreachable(site.name, f"login shell failed: {login.stderr.strip()}")
        if site.ssh is not None:
            result.checks.append(Check("login", True, f"{site.ssh.user or ''}@{site.ssh.host}"))
            result.checks.append(Check("host key", True, "matches the pinned key"))
            result.checks.extend(_certificate_checks(site))
        result.checks.extend(_workdir_checks(driver))
        if site.scheduler == "slurm":
            result.checks.extend(_slurm_checks(driver))
            result.queue_depth = _queue_depth(driver)
        else:
            result.checks.append(Check("scheduler", True, f"local, {_slots(site)} slot(s)"))
            result.queue_depth = 0
    except SiteUnreachable as exc:
        result.reachable = False
        result.checks.append(Check("login", False, str(exc)))
    except SiteError as exc:
        result.checks.append(Check("probe", False, str(exc)))
    return result


def _certificate_checks(site: Site) -> list[Check]:
    """`certificate valid until T (N h left)` for each short-lived user certificate."""
    from sites.ssh.transport import certificate_checks

    assert site.ssh is not None
    checks = certificate_checks(site.name, site.ssh)
    return [Check("certificate", ok, detail) for ok, detail in checks]


def _slots(site: Site) -> int:
    return site.local.slots if site.local else 2


def _workdir_checks(driver: SiteDriver) -> list[Check]:
    umask = driver.site.environment.effective_umask
    writable = driver.transport.run(remote.workdir_writable_command(driver.workdir, umask=umask))
    checks = [
        Check(
            "work dir writable",
            writable.ok,
            driver.workdir if writable.ok else writable.stderr.strip(),
        )
    ]
    space = driver.transport.run(remote.free_space_command(driver.workdir))
    free_kib = remote.parse_free_kib(space.returncode, space.stdout, space.stderr)
    if free_kib is not None:
        free_gib = free_kib / (1024 * 1024)
        checks.append(Check("free space", free_gib >= MIN_FREE_GIB, f"{free_gib:.1f} GiB free"))
    else:
        checks.append(Check("free space", False, space.stderr.strip() or "df gave no answer"))
    return checks


def _slurm_checks(driver: SiteDriver) -> list[Check]:
    from sites.slurm.scheduler import SlurmScheduler

    scheduler = driver.batch_scheduler
    assert isinstance(scheduler, SlurmScheduler)
    settings = scheduler.slurm
    versions = scheduler.versions()
    checks = [
        Check(tool, version is not None, version or f"{tool} not found on the login node")
        for tool, version in versions.items()
        if tool in ("sbatch", "sacct", "squeue")
    ]
    available = scheduler.partitions()
    for partition in settings.partitions:
        info = available.get(partition.name)
        if info is None:
            known = ", ".join(sorted(available)) or "none"
            checks.append(Check(f"partition {partition.name}", False, f"not on the site ({known})"))
            continue
        problems = []
        if not info.available:
            problems.append("not available")
        if partition.gpus_per_node > info.gpus_per_node:
            problems.append(
                f"declares {partition.gpus_per_node} GPUs/node, GRES has {info.gpus_per_node}"
            )
        if partition.gpu_type and info.gpu_types and partition.gpu_type not in info.gpu_types:
            problems.append(f"GPU type {partition.gpu_type} not in {', '.join(info.gpu_types)}")
        detail = "; ".join(problems) or (
            f"up, {info.gpus_per_node} GPU(s)/node" if info.gpus_per_node else "up"
        )
        checks.append(Check(f"partition {partition.name}", not problems, detail))
    if settings.account:
        associations = scheduler.associations(settings.account)
        checks.append(
            Check(
                "account",
                bool(associations),
                settings.account
                if associations
                else f"user has no association with {settings.account}",
            )
        )
    return checks


def _queue_depth(driver: SiteDriver) -> int | None:
    result = driver.transport.run(remote.queue_depth_command())
    return remote.parse_queue_depth(result.returncode, result.stdout, result.stderr)


def trust_site_keys(site: Site) -> list[tuple[str, str, str]]:
    """(host key line, SHA256 fingerprint, address) of every login node behind the
    site's host name, fetched without logging in (`site trust`)."""
    if site.ssh is None:
        raise SiteError(site.name, "has no 'ssh:' section: there is no host key to trust")
    from sites.ssh.transport import fetch_host_keys

    return fetch_host_keys(site.name, site.ssh)
