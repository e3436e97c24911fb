"""Through the CLI on a real SLURM site over real sshd: what a run leaves on the site
(its run directory, the job's output files, what the job writes) is out of reach of
the other members of the project group and of other users (stat over SSH)."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest

from tests.helpers import cli, cli_env, write_yaml
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox, SandboxSite

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


def modes(sandbox: Sandbox, site: SandboxSite, paths: list[str]) -> dict[str, int]:
    done = sandbox.ssh(site, ["stat", "-c", "%a %n", "--", *paths])
    assert done.returncode == 0, done.stderr
    return {
        line.split(" ", 1)[1]: int(line.split(" ", 1)[0], 8) for line in done.stdout.splitlines()
    }


def others_can_read(sandbox: Sandbox, site: SandboxSite, path: str) -> list[str]:
    """Who besides the owner can read `path`: 'group' and/or 'others', judged from the
    modes of `path` and of every directory above it (each must let them through)."""
    chain = [path]
    while chain[-1] != "/":
        chain.append(posixpath.dirname(chain[-1]))
    found = modes(sandbox, site, chain)
    readers = []
    for who, read, through in (("group", 0o040, 0o010), ("others", 0o004, 0o001)):
        if found[path] & read and all(found[d] & through for d in chain[1:]):
            readers.append(who)
    return readers


def test_a_runs_files_on_a_slurm_site_are_owner_only(
    slurm_sandbox: Sandbox, tmp_path: Path
) -> None:
    site = slurm_sandbox.site("site-a")
    env = cli_env(tmp_path / "home")
    assert cli(env, "partner", "add", "cuni", "--name", "Charles University").returncode == 0
    workdir = f"{site.home}/perm-e2e-{tmp_path.name}"
    document = slurm_site_document(site, "cuni", environment={"workdir": workdir})
    added = cli(env, "site", "add", str(write_yaml(tmp_path / "a.yaml", document)), "--as", "cuni")
    assert added.returncode == 0, added.stderr
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "perm",
            "stages": [
                {
                    "name": "make",
                    "site": "site-a",
                    "script": "echo out; echo result > $HPCFLEET_OUTPUTS/r.txt",
                    "outputs": ["r.txt"],
                }
            ],
        },
    )
    try:
        assert cli(env, "site", "check", "site-a").returncode == 0
        launched = cli(env, "run", "launch", str(spec), "--wait", "--as", "cuni", timeout=600)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        run_id = launched.stdout.split()[0]
        stage = f"{workdir}/runs/{run_id}/make"
        for path in (
            f"{workdir}/runs/{run_id}",
            f"{stage}/attempt-1/logs/0.out",
            f"{stage}/attempt-1/logs/0.err",
            f"{stage}/outputs/r.txt",
        ):
            assert others_can_read(slurm_sandbox, site, path) == [], path
        files = modes(
            slurm_sandbox, site, [f"{stage}/attempt-1/logs/0.out", f"{stage}/outputs/r.txt"]
        )
        assert set(files.values()) == {0o600}
    finally:
        slurm_sandbox.run_on(site, ["rm", "-rf", "--", workdir])
