"""Record real SLURM output for the unit tests of `sites.slurm.parse`.

Runs a fixed set of jobs on one sandbox site (tests/sandbox) through the same command
builders the scheduler uses, and writes what sacct, squeue, sbatch, sinfo and sacctmgr
printed into tests/data/slurm/recorded/, plus `jobs.json` naming each scenario's job id.

    .venv/bin/python tests/data/slurm/record.py [--site site-b] [--with-timeout]

Run as root (commands run as the sandbox user via runuser). Takes about 20 s, or about
2 minutes with --with-timeout (SLURM enforces time limits in whole minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sites.slurm.parse import parse_sacct
from sites.slurm.scheduler import (
    account_check_command,
    find_by_name_command,
    partitions_command,
    squeue_find_by_name_command,
    squeue_status_command,
    status_command,
    versions_command,
)

OUT = Path(__file__).resolve().parent / "recorded"
SANDBOX = Path(os.environ.get("HPC_SANDBOX_DIR", "/tmp/hpc-sandbox"))
USER = os.environ.get("HPC_SANDBOX_USER", "hpcuser")


class Site:
    """Runs commands as the sandbox user against one site's slurm.conf."""

    def __init__(self, name: str, conf: Path | None = None) -> None:
        self.home = SANDBOX / name / "home"
        self.conf = conf or SANDBOX / name / "etc" / "slurm.conf"

    def with_conf(self, conf: Path) -> Site:
        site = Site(self.home.parent.name, conf)
        return site

    def run(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", USER, "--", "env", f"SLURM_CONF={self.conf}"]
        argv += [f"HOME={self.home}", "bash", "-c", f'cd "$HOME" && {command}']
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise SystemExit(f"{command!r} failed: {result.stderr}")
        return result

    def sbatch(self, *args: str) -> str:
        command = shlex.join(["sbatch", "--parsable", "--output=/dev/null", *args])
        return self.run(command).stdout.strip().split(";")[0]


def save(name: str, text: str) -> None:
    (OUT / name).write_text(text)
    print(f"wrote {name} ({len(text.splitlines())} lines)")


def wait_final(site: Site, ids: list[str], deadline: float) -> str:
    while True:
        stdout = site.run(status_command(ids)).stdout
        statuses = parse_sacct(stdout)
        pending = [s for s in statuses.values() if not s.state.is_final]
        if statuses and not pending:
            return stdout
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs not final in time: {pending}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--site", default="site-b")
    parser.add_argument("--with-timeout", action="store_true")
    args = parser.parse_args()
    site = Site(args.site)
    OUT.mkdir(exist_ok=True)

    jobs: dict[str, str] = {}
    save("sbatch_parsable.stdout", site.run("sbatch --parsable --wrap true").stdout)
    jobs["array3"] = site.sbatch("--array=0-2", "--wrap", "sleep 2")
    jobs["throttled"] = site.sbatch("--array=0-5%2", "--wrap", "sleep 3")
    jobs["exit3"] = site.sbatch("--wrap", "exit 3")
    jobs["signal9"] = site.sbatch("--wrap", "kill -9 $$")
    jobs["gpu"] = site.sbatch("-p", "gpu", "--gres=gpu:1", "--wrap", "sleep 3")
    jobs["cancelled"] = site.sbatch("--wrap", "sleep 60")
    jobs["after_ok"] = site.sbatch(f"--dependency=afterok:{jobs['array3']}", "--wrap", "true")
    never = f"--dependency=afterok:{jobs['exit3']}"
    jobs["never_killed"] = site.sbatch(never, "--kill-on-invalid-dep=yes", "--wrap", "true")
    jobs["never_held"] = site.sbatch(never, "--wrap", "true")
    jobs["named"] = site.sbatch("--job-name=hpcfleet-rec-find-1", "--wrap", "true")
    if args.with_timeout:
        jobs["timeout"] = site.sbatch("--time=1", "--wrap", "sleep 300")
    ids = list(jobs.values())
    # At once: sacct has not caught up with slurmctld yet.
    save("sacct_just_submitted.stdout", site.run(status_command(ids)).stdout)
    time.sleep(1.5)
    save("sacct_running.stdout", site.run(status_command(ids)).stdout)
    save("squeue_running.stdout", site.run(squeue_status_command(ids)).stdout)
    site.run(f"scancel {jobs['cancelled']}")
    time.sleep(3)
    # never_held stays PENDING (DependencyNeverSatisfied) until cancelled.
    save("squeue_dependency_never.stdout", site.run(squeue_status_command(ids)).stdout)
    site.run(f"scancel {jobs['never_held']}")
    deadline = time.monotonic() + (240 if args.with_timeout else 60)
    save("sacct_final.stdout", wait_final(site, ids, deadline))
    save("squeue_final.stdout", site.run(squeue_status_command(ids)).stdout)
    name = "hpcfleet-rec-find-1"
    save("sacct_find_by_name.stdout", site.run(find_by_name_command(name)).stdout)
    save("squeue_find_by_name.stdout", site.run(squeue_find_by_name_command(name)).stdout)
    save("sacct_unknown_id.stdout", site.run(status_command(["999999"])).stdout)
    unknown = site.run(squeue_status_command(["999999"]), check=False)
    save("squeue_unknown_id.stderr", unknown.stderr)

    save("versions.stdout", site.run(versions_command()).stdout)
    save("sinfo.stdout", site.run(partitions_command()).stdout)
    save("sacctmgr_assoc.stdout", site.run(account_check_command("sandbox")).stdout)

    failed = site.run("sbatch --parsable -p nope --wrap true", check=False)
    save("sbatch_invalid_partition.stderr", failed.stderr)
    failed = site.run("sbatch --parsable --mem=99G --wrap true", check=False)
    save("sbatch_node_config.stderr", failed.stderr)
    failed = site.run("sacct -S now-10min -X", check=False)
    save("sacct_bad_time.stderr", failed.stderr)

    # Broken sites, from edited copies of the site's slurm.conf.
    text = site.conf.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        no_acct = Path(tmp) / "noacct.conf"
        no_acct.write_text(
            re.sub(
                r"(?m)^AccountingStorageType=.*$",
                "AccountingStorageType=accounting_storage/none",
                text,
            )
        )
        no_acct.chmod(0o644)
        result = site.with_conf(no_acct).run(status_command(["1"]), check=False)
        save("sacct_accounting_disabled.stderr", result.stderr)
        no_ctld = Path(tmp) / "noctld.conf"
        no_ctld.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=6999", text))
        no_ctld.chmod(0o644)
        result = site.with_conf(no_ctld).run("sbatch --parsable --wrap true", check=False)
        save("sbatch_controller_down.stderr", result.stderr)

    jobs.update(record_placeholder(site))
    (OUT / "jobs.json").write_text(json.dumps(jobs, indent=2) + "\n")
    print("jobs:", jobs)


def record_placeholder(site: Site) -> dict[str, str]:
    """sacct's final placeholder rows, caught in the second or two after two jobs end
    (named "allocation", the array not split yet), with what squeue shows meanwhile."""
    for _ in range(5):
        plain = site.sbatch("--job-name=hpcfleet-rec-placeholder-1", "--wrap", "true")
        array = site.sbatch(
            "--job-name=hpcfleet-rec-placeholder-2", "--array=0-1", "--wrap", "true"
        )
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            sacct = site.run(status_command([plain, array])).stdout
            squeue = site.run(squeue_status_command([plain, array])).stdout
            rows = parse_sacct(sacct)
            if array in rows and all(
                s.state.is_final and s.name == "allocation" for s in rows.values()
            ):
                save("sacct_placeholder.stdout", sacct)
                save("squeue_placeholder.stdout", squeue)
                return {"placeholder_plain": plain, "placeholder_array": array}
            time.sleep(0.03)
    print("no placeholder rows seen: sacct_placeholder.stdout left as it was")
    previous = json.loads((OUT / "jobs.json").read_text())
    return {key: previous[key] for key in ("placeholder_plain", "placeholder_array")}


if __name__ == "__main__":
    main()
