"""Benchmark 3 (issue 3): scheduler commands per poll cycle for 1, 50 and 500 tracked jobs.

    .venv/bin/python bench/bench_polls.py [--counts 1 50 500] [--watch 6] [--site site-a]

Needs the SLURM sandbox running; talks to loopback only. For each count N it submits N
real `sleep 600` jobs through `SlurmScheduler` over an `SshTransport` wrapped so that
every `run()` is counted by the tool it runs (sacct, squeue, ...), then:

1. calls `status(all N ids)` a few times and counts the commands each call sends;
2. lets a `SiteWatcher` (1 s interval) track the N jobs for `--watch` seconds and
   compares its `polls` with the commands the transport carried meanwhile;
3. cancels the jobs and polls `status()` once a second until the jobs are final in
   sacct, counting commands per call on the way (the squeue top-up stops there).

One of the N jobs runs; the other N-1 wait (afterok) on a held anchor job, so they are
live (PENDING) without filling the shared sandbox's CPUs. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass

from benchlib import (
    JOB_PREFIX,
    CountingTransport,
    Report,
    cancel_by_name,
    describe_counts,
    hold_anchor,
    open_slurm,
    remove_dir,
    require_sandbox,
    sandbox_site,
    sleep_request,
)

from flows.watcher import SiteWatcher
from registry.site import Site
from sites.driver import SiteDriver
from sites.slurm.scheduler import SlurmScheduler
from tests.sandbox.sandbox import Sandbox

STATUS_CALLS = 5
SETTLE_TIMEOUT = 60.0


@dataclass
class Result:
    count: int
    per_call: list[Counter[str]]
    call_ms: float
    kind_ms: dict[str, float]  # mean ms per command of each kind during the status calls
    states: Counter[str]
    polls: int
    watch_commands: Counter[str]
    after_cancel: list[int]  # commands per status() call, once a second after scancel
    failures: list[str]  # commands that raised (the sandbox disturbed by someone else)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 50, 500])
    parser.add_argument("--watch", type=float, default=6.0, help="seconds of SiteWatcher")
    parser.add_argument("--site", default="site-a")
    args = parser.parse_args()
    report = Report(
        "Issue 3 · 3. Scheduler commands per poll cycle",
        ".venv/bin/python bench/bench_polls.py --counts "
        + " ".join(map(str, args.counts))
        + f" --watch {args.watch:g}",
    )
    sandbox = require_sandbox()
    _, model = sandbox_site(sandbox, args.site)
    results = [measure(sandbox, model, count, args.watch) for count in args.counts]
    render(report, results)
    print(report.markdown())


def measure(sandbox: Sandbox, site: Site, count: int, watch_seconds: float) -> Result:
    name = f"{JOB_PREFIX}-polls{count}"
    workdir = f"{sandbox.site(site.name).home}/hpcfleet-bench/{name}"
    transport, scheduler = open_slurm(site)
    anchor = hold_anchor(sandbox, site.name, f"{name}-anchor")
    try:
        ids = [scheduler.submit(sleep_request(name, workdir))]
        pending = sleep_request(name, workdir, after_ok=anchor)
        ids += [scheduler.submit(pending) for _ in range(count - 1)]
        print(f"{count} jobs submitted on {site.name}", file=sys.stderr)
        spent = transport.time_spent()
        per_call, seconds, states = _status_calls(transport, scheduler, ids)
        kind_ms: dict[str, float] = {
            kind: (transport.time_spent()[kind] - spent.get(kind, 0.0)) / STATUS_CALLS * 1000
            for kind in ("sacct", "squeue")
            if kind in transport.time_spent()
        }
        polls, watch_commands = _watch(transport, scheduler, site, workdir, ids, watch_seconds)
        cancel_by_name(sandbox, site.name, [name])
        after_cancel = _until_settled(transport, scheduler, ids)
    finally:
        cancel_by_name(sandbox, site.name, [name, f"{name}-anchor"])
        remove_dir(sandbox, site.name, workdir)
        transport.close()
    return Result(
        count,
        per_call,
        seconds * 1000,
        kind_ms,
        states,
        polls,
        watch_commands,
        after_cancel,
        list(transport.failures),
    )


def _status_calls(
    transport: CountingTransport, scheduler: SlurmScheduler, ids: list[str]
) -> tuple[list[Counter[str]], float, Counter[str]]:
    per_call, times = [], []
    states: Counter[str] = Counter()
    for _ in range(STATUS_CALLS):
        before = transport.snapshot()
        started = time.perf_counter()
        statuses = scheduler.status(ids)
        times.append(time.perf_counter() - started)
        per_call.append(transport.snapshot() - before)
        states = Counter(s.state.value for s in statuses.values())
    return per_call, statistics.median(times), states


def _watch(
    transport: CountingTransport,
    scheduler: SlurmScheduler,
    site: Site,
    workdir: str,
    ids: list[str],
    seconds: float,
) -> tuple[int, Counter[str]]:
    before = transport.snapshot()
    watcher = SiteWatcher(SiteDriver(site, transport, scheduler, workdir), interval=1.0)
    try:
        watcher.track(ids)
        time.sleep(seconds)
    finally:
        watcher.close()
    return watcher.polls, transport.snapshot() - before


def _until_settled(
    transport: CountingTransport, scheduler: SlurmScheduler, ids: list[str]
) -> list[int]:
    """Commands per status() call, one call a second, until a call needs sacct alone."""
    commands: list[int] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        before = transport.runs
        scheduler.status(ids)
        commands.append(transport.runs - before)
        if commands[-1] == 1:
            break
        time.sleep(1.0)
    return commands


def render(report: Report, results: list[Result]) -> None:
    report.header = (
        "tracked jobs",
        "states seen",
        "commands per `status()` call",
        "ms per call: median (mean of its sacct + squeue)",
        "SiteWatcher: polls / commands",
        "after scancel: commands per call, 1 s apart",
    )
    worst = 0.0
    for r in results:
        per_call = {sum(c.values()) for c in r.per_call}
        kinds = describe_counts(r.per_call[-1])
        watch_total = sum(r.watch_commands.values())
        per_poll = watch_total / r.polls if r.polls else float("nan")
        worst = max(worst, per_poll, *per_call)
        report.row(
            r.count,
            describe_counts(r.states),
            f"{'/'.join(map(str, sorted(per_call)))} ({kinds})",
            f"{r.call_ms:.0f} ({' + '.join(f'{ms:.0f}' for ms in r.kind_ms.values())})",
            f"{r.polls} / {watch_total} ({describe_counts(r.watch_commands)}) = {per_poll:.1f}",
            ", ".join(map(str, r.after_cancel)),
        )
    failures = [f for r in results for f in r.failures]
    if failures:
        report.notes.append("Commands that failed meanwhile: " + "; ".join(failures))
    report.target(
        "1 scheduler query per site per poll cycle, whatever the number of jobs",
        f"{worst:.0f} command per poll at most (sacct and squeue in one shell command)",
        worst <= 1,
    )
    report.notes += [
        "`SlurmScheduler.status()` sends ONE command per poll: sacct for all ids and "
        "squeue for the same ids in one shell command (`status_pair_command`), so one "
        "channel round trip on the one connection, counted here as one sacct command. "
        "squeue's answer only counts for jobs sacct has not settled yet (PENDING, "
        "RUNNING, or not in sacct yet: sacct lags slurmctld by seconds).",
        "sacct (slurmdbd, MariaDB) is the slow one of the two queries.",
    ]


if __name__ == "__main__":
    main()
