"""Benchmark 2 (issue 3): SSH logins per site during a 200-job hpcfleet run.

    .venv/bin/python bench/bench_logins.py [--tasks 100]

Needs the SLURM sandbox running; talks to loopback only. Registers the sandbox's two
SLURM sites (host keys pinned) in a fresh registry, launches a run with one stage of a
`--tasks`-task array (`true`) on site-a and one on site-b, and drives it to the end in
this process with the engine (`flows.engine`: `run_context`, `drive_stages`,
`conclude`, exactly what `execute_run` does, without Prefect), with a real MLflow store
(SQLite). Logins are counted three ways:

- hpcfleet's own counter, `SshTransport.connection.logins`, read before the run closes;
- the "Accepted publickey" lines each site's sshd wrote during the run whose source port
  is one of the TCP connections this process opened to that site (recorded by wrapping
  `socket.create_connection`); other users of the shared sandbox are left out this way,
  and all lines written meanwhile are shown too;
- the TCP connections this process opened to each site's sshd.

Also reports the run's wall time, its commands per site and the process's CPU time and
peak RSS. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import resource
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from benchlib import (
    Report,
    accepted_logins,
    command_kind,
    describe_counts,
    process_memory,
    require_sandbox,
    sshd_log,
)

from flows.engine import EngineConfig, conclude, drive_stages, run_context
from flows.launch import launch
from registry.partner import Partner
from registry.site import Site
from registry.states import JobState
from registry.store import Store
from sites.ssh.transport import SshTransport
from sites.transport import CommandResult
from tests.sandbox.documents import slurm_site_document

SITES = ("site-a", "site-b")
PARTNER = "bench"


class Connections:
    """Local ports of the TCP connections this process opens, by destination port."""

    def __init__(self) -> None:
        self.ports: dict[int, list[int]] = {}
        self._lock = threading.Lock()
        self._original = socket.create_connection

    def __enter__(self) -> Connections:
        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            sock = self._original(address, *args, **kwargs)
            with self._lock:
                self.ports.setdefault(int(address[1]), []).append(sock.getsockname()[1])
            return sock

        socket.create_connection = create_connection
        return self

    def __exit__(self, *exc: object) -> None:
        socket.create_connection = self._original


class Commands:
    """Counts `SshTransport` calls per site for the duration: `run` by the tool it runs,
    `put` and `get` (file transfers, a channel each) as such."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self._lock = threading.Lock()
        self._originals = (SshTransport.run, SshTransport.put, SshTransport.get)

    def _count(self, site: str, kind: str) -> None:
        with self._lock:
            self.counts.setdefault(site, Counter())[kind] += 1

    def __enter__(self) -> Commands:
        run, put, get = self._originals

        def counted_run(transport: SshTransport, command: str, **kwargs: Any) -> CommandResult:
            self._count(transport.site, command_kind(command))
            return run(transport, command, **kwargs)

        def counted_put(transport: SshTransport, local: Path, remote: str) -> None:
            self._count(transport.site, "put")
            put(transport, local, remote)

        def counted_get(transport: SshTransport, remote: str, local: Path) -> None:
            self._count(transport.site, "get")
            get(transport, remote, local)

        SshTransport.run = counted_run  # type: ignore[method-assign,assignment]
        SshTransport.put = counted_put  # type: ignore[method-assign,assignment]
        SshTransport.get = counted_get  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        SshTransport.run, SshTransport.put, SshTransport.get = self._originals  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="array tasks per site")
    args = parser.parse_args()
    report = Report(
        "Issue 3 · 2. SSH logins per site during a 200-job run",
        f".venv/bin/python bench/bench_logins.py --tasks {args.tasks}",
    )
    sandbox = require_sandbox()
    with tempfile.TemporaryDirectory(prefix="hpcfleet-bench-") as scratch:
        home = Path(scratch)
        config = EngineConfig(
            database_url=f"sqlite:///{home / 'registry.db'}",
            home=home,
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_root=(home / "mlartifacts").as_uri(),
        )
        store = Store.open(config.database_url)
        store.put_partner(Partner(id=PARTNER, name="Benchmark"))
        sites = {name: sandbox.site(name) for name in SITES}
        for site in sites.values():
            store.put_site(Site.model_validate(slurm_site_document(site, PARTNER)), PARTNER)
        spec = home / "spec" / "run.yaml"
        spec.parent.mkdir()
        spec.write_text(yaml.safe_dump(_spec(args.tasks), sort_keys=False))
        run_id = launch(store, spec, PARTNER).run.run_id
        offsets = {name: sshd_log(site).stat().st_size for name, site in sites.items()}
        cpu_before, started = _cpu_seconds(), time.monotonic()
        with (
            Connections() as connections,
            Commands() as commands,
            run_context(config, run_id) as ctx,
        ):
            drive_stages(ctx)
            record = conclude(ctx)
            logins = {name: _logins(ctx.driver(name).transport) for name in SITES}
            polls = ctx.watchers.total_polls()
        wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu_before
        jobs = store.jobs(run_id)
        for name, site in sites.items():
            sandbox.run_on(name, ["rm", "-rf", "--", f"{site.home}/hpcfleet/runs/{run_id}"])
        store.close()

    completed = sum(j.state is JobState.COMPLETED for j in jobs)
    report.header = (
        "site",
        "jobs (array tasks)",
        "`connection.logins`",
        "sshd log: logins from this process (all logins meanwhile)",
        "TCP connections opened",
        "commands sent",
    )
    worst = 0
    sent = {name: commands.counts.get(name, Counter()) for name in SITES}
    for name, site in sites.items():
        ours = connections.ports.get(site.port, [])
        accepted = accepted_logins(sshd_log(site), offsets[name])
        from_us = [port for port in accepted if port in ours]
        worst = max(worst, logins[name], len(from_us), len(ours))
        report.row(
            name,
            sum(j.site == name for j in jobs),
            logins[name],
            f"{len(from_us)} ({len(accepted)})",
            len(ours),
            f"{sum(sent[name].values())} ({describe_counts(sent[name])})",
        )
    report.target("≤ 2 SSH logins per site for a 200-job run", f"{worst} per site", worst <= 2)
    report.notes += [
        f"The run ({len(jobs)} jobs, {completed} COMPLETED, run state {record.state}) took "
        f"{wall:.1f} s with {polls} watcher polls in all; this process used {cpu:.1f} s of "
        f"CPU for it (engine, MLflow SQLite store, SSH) and peaked at "
        f"{process_memory()['VmHWM'] / 1024:.0f} MiB RSS.",
        "Commands sent: `SshTransport.run` calls by the tool they run (`mkdir`, `printf`, "
        "`tar`... are staging and log collection), and `put`/`get` file transfers; each is "
        "one channel on the site's one connection.",
    ]
    print(report.markdown())


def _spec(tasks: int) -> dict[str, Any]:
    def stage(name: str, site: str) -> dict[str, Any]:
        return {
            "name": name,
            "site": site,
            "resources": {"time": "00:05:00"},
            "array": {"i": list(range(tasks))},
            "command": ["true"],
        }

    return {
        "name": "bench-logins",
        "experiment": "bench",
        "stages": [stage("a", "site-a"), stage("b", "site-b")],
    }


def _logins(transport: object) -> int:
    return transport.connection.logins if isinstance(transport, SshTransport) else 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
