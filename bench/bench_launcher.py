"""The launcher's cost: submit-to-running latency of a 4-task job through hpcfleet's srun
launcher (srun + per-task rank wrapper) vs the same fan-out written by hand.

    .venv/bin/python bench/bench_launcher.py [--rounds 15] [--site site-a]

Needs the SLURM sandbox running (`tests/sandbox/hpc-sandbox up`); talks to loopback only.
Each round submits, taking turns, over ONE `SshTransport`:

- hpcfleet: `SlurmScheduler.submit()` of a `JobRequest` with `tasks_per_node=4` (the
  rendered script: module/env lines, MASTER_ADDR/MASTER_PORT, `srun ... bash -c WRAPPER
  hpcfleet-task bash -c SCRIPT`);
- by hand: `sbatch --parsable` of a minimal script with `--ntasks-per-node=4` and
  `srun bash -c SCRIPT`;
- for scale, hpcfleet with one task (no launcher: the command runs on the batch host).

Each task writes `date +%s.%N` as its first act, and so does the batch script (for
hpcfleet as the site's `setup:` line, before the launcher's lines): reported are the
last task's start minus the moment just before submitting, and minus the batch
script's start (the sandbox runs on this machine: one clock).
Also timed without SLURM: the wrapper alone (`bash -c WRAPPER hpcfleet-task true`) vs
`true`, 50 times each. Jobs carry this process's id in their names and are cancelled by
name at the end. Prints a markdown section (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import JOB_PREFIX, Report, cancel_by_name, remove_dir, require_sandbox, sandbox_site

from registry.site import Site
from sites.driver import DriverPool, SiteDriver
from sites.launcher import rank_wrapper
from sites.scheduler import JobRequest, JobResources, TaskSpec

TASKS = 4
STAMP = 'date +%s.%N > "stamps/${SLURM_PROCID}"'
# The batch script's own start, written before anything the launcher adds (for hpcfleet,
# as the site's `setup:` line; by hand, as the script's first line).
BATCH_STAMP = "date +%s.%N > batch-stamp"
WAIT_S = 60
WRAPPER_CALLS = 50


def hpcfleet_client(driver: SiteDriver, name: str, tasks: int) -> Callable[[str], float]:
    def submit(workdir: str) -> float:
        request = JobRequest(
            name=name,
            workdir=workdir,
            log_dir=f"{workdir}/logs",
            tasks=(TaskSpec(script=STAMP),),
            resources=JobResources(tasks_per_node=tasks, time_seconds=300),
        )
        started = time.time()
        driver.scheduler.submit(request)
        return started

    return submit


def by_hand_client(driver: SiteDriver, name: str) -> Callable[[str], float]:
    def submit(workdir: str) -> float:
        script = "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --job-name={name}",
                "#SBATCH --account=sandbox --nodes=1 --ntasks-per-node=4 --cpus-per-task=1",
                f"#SBATCH --time=5 --output={workdir}/logs/0.out --chdir={workdir}",
                BATCH_STAMP,
                f"srun bash -c {shlex.quote(STAMP)}",
                "",
            ]
        )
        started = time.time()
        result = driver.transport.run("sbatch --parsable", stdin=script.encode())
        if not result.ok:
            sys.exit(f"sbatch failed: {result.stderr}")
        return started

    return submit


def last_start(driver: SiteDriver, workdir: str, tasks: int) -> tuple[float, float]:
    """(batch script start, latest task start), once every task has written its stamp."""
    deadline = time.monotonic() + WAIT_S
    where = shlex.quote(workdir)
    while time.monotonic() < deadline:
        result = driver.transport.run(f"cat {where}/batch-stamp {where}/stamps/* 2>/dev/null")
        stamps = [float(s) for s in result.stdout.split()]
        if len(stamps) == tasks + 1:
            return stamps[0], max(stamps[1:])
        time.sleep(0.05)
    sys.exit(f"the tasks in {workdir} did not all start within {WAIT_S} s")


def wrapper_seconds() -> tuple[float, float]:
    """Mean seconds of `bash -c WRAPPER hpcfleet-task true` and of `true`, run locally."""
    env = {"PATH": "/usr/bin:/bin", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    env |= {"SLURM_NODEID": "0", "SLURM_NTASKS": "1"}
    results = []
    for argv in (["bash", "-c", rank_wrapper(()), "hpcfleet-task", "true"], ["true"]):
        started = time.perf_counter()
        for _ in range(WRAPPER_CALLS):
            subprocess.run(argv, env=env, check=True)
        results.append((time.perf_counter() - started) / WRAPPER_CALLS)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--site", default="site-a")
    args = parser.parse_args()
    report = Report(
        "Issue 12-2026 · Launcher: submit-to-running latency, srun launcher vs by hand",
        f".venv/bin/python bench/bench_launcher.py --rounds {args.rounds} --site {args.site}",
    )
    sandbox = require_sandbox()
    site, model = sandbox_site(sandbox, args.site)
    pool = DriverPool(Path("/tmp"))
    document = model.model_dump(mode="json")
    document["environment"] = {**document["environment"], "setup": [BATCH_STAMP]}
    driver = pool.get(Site.model_validate(document))
    bench_dir = f"{driver.workdir}/hpcfleet-bench/{JOB_PREFIX}"
    clients = {
        f"hpcfleet, {TASKS} tasks (srun + wrapper)": (
            hpcfleet_client(driver, f"{JOB_PREFIX}-launcher", TASKS),
            TASKS,
        ),
        f"by hand, {TASKS} tasks (`srun bash -c ...`)": (
            by_hand_client(driver, f"{JOB_PREFIX}-hand"),
            TASKS,
        ),
        "hpcfleet, 1 task (no launcher)": (hpcfleet_client(driver, f"{JOB_PREFIX}-one", 1), 1),
    }
    latencies: dict[str, list[float]] = {label: [] for label in clients}
    launches: dict[str, list[float]] = {label: [] for label in clients}
    try:
        for round_number in range(1, args.rounds + 1):
            for index, (label, (submit, tasks)) in enumerate(clients.items()):
                workdir = f"{bench_dir}/r{round_number}-{index}"
                driver.transport.run(
                    f"mkdir -p {shlex.quote(workdir)}/logs {shlex.quote(workdir)}/stamps"
                )
                started = submit(workdir)
                batch, last = last_start(driver, workdir, tasks)
                latencies[label].append(last - started)
                launches[label].append(last - batch)
                print(
                    f"round {round_number}: {label}: {last - started:.3f} s, "
                    f"of which batch start -> last task {last - batch:.3f} s",
                    file=sys.stderr,
                )
        wrapped, bare = wrapper_seconds()
    finally:
        cancel_by_name(
            sandbox, site.name, [f"{JOB_PREFIX}-{n}" for n in ("launcher", "hand", "one")]
        )
        remove_dir(sandbox, site.name, bench_dir)
        pool.close()
    _report(report, latencies, launches, wrapped, bare)
    print(report.markdown())


def _report(
    report: Report,
    latencies: dict[str, list[float]],
    launches: dict[str, list[float]],
    wrapped: float,
    bare: float,
) -> None:
    report.header = ("job", "submit → last task running", "batch start → last task", "runs (s)")
    end_to_end = {label: statistics.median(times) for label, times in latencies.items()}
    launch = {label: statistics.median(times) for label, times in launches.items()}
    for label, times in latencies.items():
        runs = ", ".join(f"{t:.3f}" for t in times)
        report.row(label, f"{end_to_end[label]:.3f} s", f"{launch[label] * 1000:.0f} ms", runs)
    wrapper_ms = (wrapped - bare) * 1000
    report.row("the per-task wrapper alone (local, no SLURM)", "", f"{wrapper_ms:.1f} ms", "")
    launcher, hand = list(latencies)[:2]
    for what, values in (("submit → running", end_to_end), ("batch start → running", launch)):
        difference = (values[launcher] - values[hand]) * 1000
        report.target(
            f"launcher overhead vs by hand, {what} (medians)", f"{difference:+.0f} ms", None
        )
    report.notes.append(
        "Both 4-task jobs start their tasks with one `srun` step; hpcfleet's script adds "
        "its env lines, MASTER_ADDR (one `scontrol show hostnames`) and a bash wrapper per "
        "task that exports RANK/LOCAL_RANK/NODE_RANK/WORLD_SIZE from SLURM's per-task "
        "variables, then execs the command. The sandbox's scheduler starts jobs on submit "
        "(`sched_min_interval=0`); when it starts them varies from round to round by "
        "more than the launcher costs, so the 'batch start → last task' column (from the "
        "batch script's first line to the last task's first line, one clock) isolates "
        "the launch itself. The machine is shared with other test runs."
    )


if __name__ == "__main__":
    main()
