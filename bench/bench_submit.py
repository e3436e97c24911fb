"""Benchmark 1 (issue 3): 200 job submissions through hpcfleet vs `ssh host sbatch` vs
`sbatch` on the site itself.

    .venv/bin/python bench/bench_submit.py [--jobs 200] [--rounds 3] [--site site-a]

Needs the SLURM sandbox running (`tests/sandbox/hpc-sandbox up`); talks to loopback only.
Each round submits `--jobs` jobs with each client, the clients taking turns:

- hpcfleet: `SlurmScheduler.submit()` of a one-task `JobRequest` (`true`) over ONE new
  `SshTransport` (its login is part of the time), one call after the other;
- the same, from 8 threads sharing that one connection;
- `ssh -p PORT -i KEY ... hpcuser@127.0.0.1 sbatch --parsable --wrap true`, a new
  connection (and a new ssh process) per job;
- `sbatch --parsable --wrap true` on the site as the sandbox user, in ONE bash loop timed
  inside bash with $EPOCHREALTIME (so neither `runuser` nor bash start-up is counted):
  the floor;
- on the site too, the very command hpcfleet sends (`mkdir -p ... && sbatch --parsable`
  with the rendered script on stdin), to separate SSH's cost from the script's.

Every job depends (afterok) on one held anchor job, so none of them runs and the node's
load does not disturb the timing; all are cancelled by name after each client's turn
(their names carry this process's id), so the sandbox queue is empty again at the end.
Prints a markdown section (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from benchlib import JOB_PREFIX, Report, cancel_by_name, remove_dir, require_sandbox, sandbox_site

from registry.site import Site
from sites.scheduler import JobRequest, TaskSpec
from sites.slurm.scheduler import SlurmScheduler, render_sbatch, submit_command
from sites.ssh.transport import ConnectionPool, SshTransport
from tests.sandbox.sandbox import Sandbox, SandboxSite

THREADS = 8  # SshTransport's channel limit per connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--ssh-rounds", type=int, default=1, help="rounds of the slow ssh loop (~1 min each)"
    )
    parser.add_argument("--site", default="site-a")
    args = parser.parse_args()
    report = Report(
        "Issue 3 · 1. Job submission: hpcfleet vs `ssh host sbatch` vs local `sbatch`",
        f".venv/bin/python bench/bench_submit.py --jobs {args.jobs} --rounds {args.rounds} "
        f"--ssh-rounds {args.ssh_rounds}",
    )
    sandbox = require_sandbox()
    site, model = sandbox_site(sandbox, args.site)
    bench_dir = f"{site.home}/hpcfleet-bench/{JOB_PREFIX}"
    anchor_name = f"{JOB_PREFIX}-anchor"
    anchor = _run_on(
        sandbox, site,
        ["sbatch", "--parsable", "--hold", f"--job-name={anchor_name}", "--output=/dev/null",
         "--wrap", "true"],
    ).strip()  # fmt: skip
    names: list[str] = [anchor_name]
    try:
        firsts: list[float] = []
        clients = _clients(sandbox, site, model, anchor, bench_dir, args.jobs, firsts)
        names += [name for name, _, _ in clients]
        times: dict[str, list[float]] = {label: [] for _, label, _ in clients}
        for round_number in range(1, args.rounds + 1):
            for name, label, client in clients:
                if name.endswith("-ssh") and round_number > args.ssh_rounds:
                    continue
                seconds = client()
                times[label].append(seconds)
                print(f"round {round_number}: {label}: {seconds:.2f} s", file=sys.stderr)
                cancel_by_name(sandbox, site.name, [name])
        _report(report, times, args.jobs, firsts)
    finally:
        cancel_by_name(sandbox, site.name, names)
        remove_dir(sandbox, site.name, bench_dir)
    print(report.markdown())


Client = tuple[str, str, Callable[[], float]]  # job name, label, run -> seconds


def _clients(
    sandbox: Sandbox,
    site: SandboxSite,
    model: Site,
    anchor: str,
    bench_dir: str,
    jobs: int,
    firsts: list[float],
) -> list[Client]:
    """The clients, in the order they take turns; hpcfleet's sequential client appends
    the time of its first submission (login included) to `firsts`."""
    assert model.ssh is not None and model.slurm is not None

    def request(name: str) -> JobRequest:
        return JobRequest(
            name=name,
            workdir=f"{bench_dir}/work",
            tasks=(TaskSpec(argv=("true",)),),
            log_dir=f"{bench_dir}/logs",
            after_ok=(anchor,),
        )

    def hpcfleet(name: str, threads: int) -> Callable[[], float]:
        def run() -> float:
            assert model.ssh is not None and model.slurm is not None
            job = request(name)
            started = time.perf_counter()
            # A pool of its own: this transport logs in afresh, inside the timing.
            transport = SshTransport(site.name, model.ssh, pool=ConnectionPool())
            scheduler = SlurmScheduler(site.name, transport, model.slurm, model.environment)
            try:
                if threads == 1:
                    ids = [scheduler.submit(job)]
                    firsts.append(time.perf_counter() - started)
                    ids += [scheduler.submit(job) for _ in range(jobs - 1)]
                else:
                    with ThreadPoolExecutor(threads) as pool:
                        ids = list(pool.map(lambda _: scheduler.submit(job), range(jobs)))
                seconds = time.perf_counter() - started
                logins = transport.connection.logins
            finally:
                transport.close()
            if len(set(ids)) != jobs or logins != 1:
                sys.exit(f"hpcfleet submitted {len(set(ids))} jobs with {logins} logins")
            return seconds

        return run

    def hpcfleet_array(name: str) -> float:
        assert model.ssh is not None and model.slurm is not None
        job = replace(
            request(name),
            tasks=tuple(TaskSpec(argv=("true",), array_value=str(i)) for i in range(jobs)),
        )
        started = time.perf_counter()
        with SshTransport(site.name, model.ssh, pool=ConnectionPool()) as transport:
            SlurmScheduler(site.name, transport, model.slurm, model.environment).submit(job)
        return time.perf_counter() - started

    def ssh_loop(name: str) -> float:
        command = shlex.join(_sbatch_wrap(name, anchor))
        started = time.perf_counter()
        for _ in range(jobs):
            subprocess.run(
                [*site.ssh_args(), command], check=True, stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return time.perf_counter() - started

    def local_loop(command: str) -> float:
        # One bash process as the site's user; the loop times itself.
        script = (
            f"t0=$EPOCHREALTIME; for ((i = 0; i < {jobs}; i++)); do {command} || exit 1; "
            "done >/dev/null; t1=$EPOCHREALTIME; echo $t0 $t1"
        )
        t0, t1 = _run_on(sandbox, site, script).split()
        return float(t1) - float(t0)

    same = request(f"{JOB_PREFIX}-local-same")
    script_path = f"{bench_dir}/job.sh"
    script = render_sbatch(same, model.slurm, model.environment)
    _run_on(
        sandbox, site,
        f"mkdir -p {shlex.quote(bench_dir)} && printf %s {shlex.quote(script)} "
        f"> {shlex.quote(script_path)}",
    )  # fmt: skip
    wrap_name = f"{JOB_PREFIX}-local-wrap"
    return [
        (f"{JOB_PREFIX}-hpcfleet", "hpcfleet `SlurmScheduler.submit`, one connection",
         hpcfleet(f"{JOB_PREFIX}-hpcfleet", 1)),
        (f"{JOB_PREFIX}-hpcfleet8", f"hpcfleet, {THREADS} threads on the one connection",
         hpcfleet(f"{JOB_PREFIX}-hpcfleet8", THREADS)),
        (f"{JOB_PREFIX}-ssh", "`ssh ... sbatch --parsable --wrap true`, new connection each",
         lambda: ssh_loop(f"{JOB_PREFIX}-ssh")),
        (f"{JOB_PREFIX}-array", f"for scale: hpcfleet, ONE {jobs}-task array (as the engine "
         "submits a stage's array values on a site)",
         lambda: hpcfleet_array(f"{JOB_PREFIX}-array")),
        (wrap_name, "local `sbatch --parsable --wrap true` (bash loop on the site)",
         lambda: local_loop(shlex.join(_sbatch_wrap(wrap_name, anchor)))),
        (same.name, "local: hpcfleet's own command (`mkdir -p` + `sbatch` < script)",
         lambda: local_loop(f"{submit_command(same)} < {shlex.quote(script_path)}")),
    ]  # fmt: skip


def _sbatch_wrap(name: str, anchor: str) -> list[str]:
    return [
        "sbatch", "--parsable", f"--job-name={name}", f"--dependency=afterok:{anchor}",
        "--output=/dev/null", "--wrap", "true",
    ]  # fmt: skip


def _run_on(sandbox: Sandbox, site: SandboxSite, command: str | list[str]) -> str:
    result = sandbox.run_on(site, command, timeout=240)
    if result.returncode != 0:
        sys.exit(f"on {site.name}: {command!r} failed: {result.stderr.strip()}")
    return result.stdout


def _report(report: Report, times: dict[str, list[float]], jobs: int, firsts: list[float]) -> None:
    report.header = ("client", f"{jobs} submissions (median)", "per job", "runs (s)")
    medians = {label: statistics.median(samples) for label, samples in times.items()}
    for label, samples in times.items():
        median = medians[label]
        report.row(
            label, f"{median:.2f} s", f"{median / jobs * 1000:.1f} ms",
            ", ".join(f"{s:.2f}" for s in samples),
        )  # fmt: skip
    sequential, threaded, ssh, _, local, same = (medians[label] for label in times)
    for how, seconds in (("one after the other", sequential), ("8 threads", threaded)):
        speedup = ssh / seconds
        report.target(f"≥ 30× faster than the ssh loop ({how})", f"{speedup:.0f}×", speedup >= 30)
    for how, seconds in (("one after the other", sequential), ("8 threads", threaded)):
        ratio = seconds / local
        report.target(f"within 1.5× of local sbatch ({how})", f"{ratio:.2f}×", ratio <= 1.5)
    report.notes += [
        f"The hpcfleet rows include the one login: the first submission took "
        f"{statistics.median(firsts) * 1000:.0f} ms (median), the login's share of the "
        f"total {statistics.median(firsts) / sequential * 100:.0f} %. hpcfleet one after the "
        f"other vs its own command run locally: {sequential / same:.2f}× "
        f"({(sequential - same) / jobs * 1000:+.1f} ms per job); what is left over local "
        "sbatch is one channel round trip on the open connection (≈ 3 ms here, see "
        "`SshTransport.run` in section 4) plus the `mkdir -p` of the job's directories. "
        "sbatch itself (slurmctld) takes most of each submission and varies with what "
        "else the shared sandbox is doing, hence the spread between rounds.",
        "Every job depends (afterok) on a held anchor job, so none runs while the others "
        "are timed; all are cancelled by name after each client's turn.",
    ]


if __name__ == "__main__":
    main()
