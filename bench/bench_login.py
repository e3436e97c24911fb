"""Login-node tasks (`where: login`): submit latency, submit-to-running, status cost.

    .venv/bin/python bench/bench_login.py [--rounds 10] [--site site-a]

Needs the SLURM sandbox running (its sshd is the "login node"); talks to loopback only.
Over one counting `SshTransport`, a `LoginScheduler` with `login_tasks: 1`:

1. submits `--rounds` tasks one after the other, each writing a time stamp as its first
   act, and measures the `submit()` call and submit -> first line of the task (one
   clock: this machine is the sandbox's);
2. with 1 task running and 4 waiting for the slot, times `status(5 ids)` and counts the
   commands each call sends.

Cancels and removes everything it made. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

from benchlib import (
    JOB_PREFIX,
    CountingTransport,
    Report,
    remove_dir,
    require_sandbox,
    sandbox_site,
)

from sites.login.scheduler import LoginScheduler
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.ssh.transport import ConnectionPool, SshTransport

WAIT_S = 30.0
STATUS_CALLS = 10
WAITING = 4


def request(name: str, workdir: str, script: str) -> JobRequest:
    return JobRequest(
        name=name,
        workdir=f"{workdir}/work",
        tasks=(TaskSpec(script=script),),
        log_dir=f"{workdir}/logs",
        resources=JobResources(time_seconds=120),
        where="login",
    )


def first_line(transport: CountingTransport, stamp: str) -> float:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = transport.run(f"cat {shlex.quote(stamp)} 2>/dev/null")
        if result.stdout.strip():
            return float(result.stdout)
        time.sleep(0.02)
    sys.exit(f"the task writing {stamp} did not start within {WAIT_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--site", default="site-a")
    args = parser.parse_args()
    report = Report(
        "Issue 13 · 4. Login-node tasks: submit, start and status over the site's connection",
        f".venv/bin/python bench/bench_login.py --rounds {args.rounds} --site {args.site}",
    )
    sandbox = require_sandbox()
    _, site = sandbox_site(sandbox, args.site)
    assert site.ssh is not None
    transport = CountingTransport(SshTransport(site.name, site.ssh, pool=ConnectionPool()))
    home = transport.run('printf %s "$HOME"').stdout
    bench_dir = f"{home}/hpcfleet-bench/{JOB_PREFIX}"
    scheduler = LoginScheduler(site.name, transport, bench_dir, slots=1)
    ids: list[str] = []
    try:
        submit_s, start_s = [], []
        for i in range(args.rounds):
            stamp = f"{bench_dir}/stamp-{i}"
            script = f"date +%s.%N > {shlex.quote(stamp)}"
            before = time.time()
            ids.append(scheduler.submit(request(f"{JOB_PREFIX}-login-{i}", bench_dir, script)))
            submit_s.append(time.time() - before)
            start_s.append(first_line(transport, stamp) - before)
        report.header = ("measure", "median", "runs (ms)")
        for what, values in (("`submit()`", submit_s), ("submit → task's first line", start_s)):
            runs = ", ".join(f"{v * 1000:.0f}" for v in values)
            report.row(what, f"{statistics.median(values) * 1000:.0f} ms", runs)

        live = [
            scheduler.submit(request(f"{JOB_PREFIX}-live-{i}", bench_dir, "sleep 120"))
            for i in range(WAITING + 1)
        ]
        ids += live
        time.sleep(2)  # the first one takes the slot
        before_runs = transport.runs
        timings = []
        for _ in range(STATUS_CALLS):
            started = time.perf_counter()
            states = scheduler.status(live)
            timings.append(time.perf_counter() - started)
        per_call = (transport.runs - before_runs) / STATUS_CALLS
        counted = sorted(s.state.value for s in states.values())
        report.row(
            f"`status()` of {len(live)} tasks ({', '.join(counted)})",
            f"{statistics.median(timings) * 1000:.0f} ms",
            ", ".join(f"{t * 1000:.0f}" for t in timings),
        )
        report.target("commands per `status()` call", f"{per_call:g}", per_call == 1)
        report.notes.append(
            "One login task at a time (`login_tasks: 1`): each round's task starts once the "
            "previous one has ended. Submit → first line includes the wrapper's slot "
            "`flock`, its `setsid bash script.sh` and the job body; the wrapper polls the "
            "slot every second only while another task holds it. A poll of a site's jobs "
            "sends this status command only while login tasks are live; SLURM jobs keep "
            "their own single command. The machine is shared with other test runs."
        )
    finally:
        if ids:
            scheduler.cancel(ids)
            time.sleep(3)  # the wrappers see the marker within a second, then end
        remove_dir(sandbox, args.site, bench_dir)
        transport.inner.close()
    print(report.markdown())


if __name__ == "__main__":
    main()
