"""Owner-only by default: the umask of job scripts and of the directories schedulers
create, and the site's `environment.umask` that may open them to a group."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.site import Environment, Partition, Site, SlurmSettings
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, TaskSpec
from sites.slurm.scheduler import submit_command
from sites.slurm.script import render_sbatch

SLURM = SlurmSettings(partitions=[Partition(name="cpu")])
REQUEST = JobRequest(
    name="hpcfleet-r1-s-1",
    workdir="/scratch/w",
    log_dir="/scratch/w/logs",
    tasks=(TaskSpec(argv=("touch", "out")),),
)


def _site(**environment: object) -> Site:
    return Site.model_validate(
        {
            "name": "lumi",
            "partner": "csc",
            "scheduler": "slurm",
            "slurm": {"partitions": [{"name": "cpu"}]},
            "environment": environment,
        }
    )


def _umask_line(script: str) -> list[str]:
    """The arguments of the script's `umask` line(s), as bash reads them."""
    return [shlex.split(line)[1] for line in script.splitlines() if line.startswith("umask")]


def test_slurm_script_is_owner_only_by_default() -> None:
    script = render_sbatch(REQUEST, SLURM, Environment())
    assert _umask_line(script) == ["077"]
    # Before anything of the job's own runs: modules, cd, the task.
    lines = script.splitlines()
    assert lines.index("umask 077") < next(i for i, x in enumerate(lines) if x.startswith("cd "))


def test_site_umask_replaces_the_default() -> None:
    site = _site(umask="027")
    assert _umask_line(render_sbatch(REQUEST, SLURM, site.environment)) == ["027"]
    assert shlex.split(submit_command(REQUEST, site.environment.effective_umask))[:2] == [
        "umask",
        "027",
    ]


def test_submit_command_creates_the_job_dirs_owner_only() -> None:
    command = submit_command(REQUEST)
    umask, mkdir, sbatch = (shlex.split(part) for part in command.split("&&"))
    assert umask == ["umask", "077"]
    assert mkdir[:2] == ["mkdir", "-p"]
    assert sbatch[0] == "sbatch"


def test_local_script_carries_the_umask(tmp_path: Path) -> None:
    assert _umask_line(LocalScheduler("here", tmp_path).render(REQUEST)) == ["077"]
    opened = LocalScheduler("here", tmp_path, environment=Environment(umask="007"))
    assert _umask_line(opened.render(REQUEST)) == ["007"]


@pytest.mark.parametrize("value", ["077", "027", "0077", "002"])
def test_valid_umasks_are_accepted(value: str) -> None:
    assert _site(umask=value).environment.effective_umask == value


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (63, "quotes"),  # YAML reads an unquoted 077 as the integer 63
        ("77", "3 or 4 octal digits"),
        ("0o77", "3 or 4 octal digits"),
        ("088", "3 or 4 octal digits"),
        ("077; rm -rf ~", "3 or 4 octal digits"),
        ("700", "owner"),
        ("0177", "owner"),
    ],
)
def test_bad_umasks_are_refused_naming_the_field(value: object, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _site(umask=value)
    assert "environment.umask" in str(caught.value).replace("\n  ", ".")
    assert says in str(caught.value)


def test_a_site_without_umask_keeps_its_document_unchanged() -> None:
    dumped = _site().model_dump(mode="json", exclude_none=True)
    assert "umask" not in dumped["environment"]
