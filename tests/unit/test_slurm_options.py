"""Per-stage SLURM options (qos, exclusive, mem: all, constraint, extra_flags, array
throttle), read back as sbatch reads them: one line per option, the stage's value wins."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flows.jobs import job_resources
from registry.runspec import Stage
from registry.site import Environment, Partition, Site, SlurmSettings
from sites.jobscript import render_input_links
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.slurm.script import flag_option, render_sbatch
from tests.helpers import DATA, assert_golden
from tests.unit.test_slurm_script import header, sbatch_arguments

SITE = SlurmSettings(
    account="project_465000001",
    qos="normal",
    partitions=[Partition(name="standard-g", gpus_per_node=8, default=True)],
    extra_flags=["--mem=0", "--constraint=site-wide", "--hint=nomultithread"],
)


def render(tasks: int = 1, **resources: object) -> str:
    request = JobRequest(
        name="n",
        workdir="/w",
        log_dir="/w/logs",
        tasks=(TaskSpec(argv=("true",)),) * tasks,
        resources=JobResources(**resources),  # type: ignore[arg-type]
    )
    return render_sbatch(request, SITE, Environment())


def directives(script: str) -> list[str]:
    """Every argument of every #SBATCH line, in order."""
    args: list[str] = []
    for line in script.splitlines()[1:]:
        if not line.startswith("#SBATCH"):
            break
        args.extend(sbatch_arguments(line))
    return args


def test_mem_all_is_mem_zero_and_the_stage_mem_replaces_the_sites() -> None:
    assert header(render(mem_mb=0))["--mem"] == "0"
    args = directives(render(mem_mb=8192))
    assert [a for a in args if flag_option(a) == "--mem"] == ["--mem=8G"]


def test_stage_extra_flags_win_over_ours_and_the_sites() -> None:
    args = directives(
        render(extra_flags=("--mem-per-gpu=60G", "--time=10:00", "-Cmi250x"), mem_mb=1024)
    )
    assert [a for a in args if flag_option(a) == "--mem"] == ["--mem-per-gpu=60G"]
    assert [a for a in args if flag_option(a) == "--time"] == ["--time=10:00"]
    assert [a for a in args if flag_option(a) == "--constraint"] == ["-Cmi250x"]
    assert "--hint=nomultithread" in args  # a site flag nobody else gives stays


def test_stage_qos_exclusive_constraint() -> None:
    options = header(render(qos="debug", exclusive=True, constraint="mi250x"))
    assert options["--qos"] == "debug"
    assert options["--exclusive"] == ""
    assert options["--constraint"] == "mi250x"
    assert header(render())["--qos"] == "normal"  # the site's


def test_array_throttle() -> None:
    assert header(render(tasks=24, array_parallelism=4))["--array"] == "0-23%4"
    assert header(render(tasks=3))["--array"] == "0-2"


def test_the_tighter_of_stage_and_site_throttle_applies() -> None:
    stage = Stage.model_validate(
        {"name": "e", "site": "x", "command": ["true"], "array_parallelism": 32}
    )
    site = Site.model_validate(
        {
            "name": "lumi",
            "partner": "csc",
            "scheduler": "slurm",
            "slurm": {"partitions": [{"name": "small-g"}]},
            "policy": {"max_running_tasks": 8},
        }
    )
    assert job_resources(stage, site, "small-g", None).array_parallelism == 8
    roomy = site.model_copy(
        update={"policy": site.policy.model_copy(update={"max_running_tasks": 64})}
    )
    assert job_resources(stage, roomy, "small-g", None).array_parallelism == 32


def test_lumi_standard_g_job_matches_golden_file() -> None:
    request = JobRequest(
        name="hpcfleet-r1-train-1",
        workdir="/scratch/project_465000001/hpcfleet/runs/r1/train/work",
        log_dir="/scratch/project_465000001/hpcfleet/runs/r1/train/attempt-1/logs",
        tasks=(TaskSpec(argv=("python3", "train.py")),),
        resources=JobResources(
            nodes=4,
            cpus=7,
            gpus=8,
            mem_mb=0,
            time_seconds=2 * 86400,
            partition="standard-g",
            exclusive=True,
        ),
    )
    assert_golden(
        DATA / "slurm" / "golden" / "lumi_standard_g.sh",
        render_sbatch(request, SITE, Environment(modules=["LUMI/24.03", "partition/G"])),
    )


def test_chained_job_links_its_inputs_when_it_starts(tmp_path: Path) -> None:
    """A job queued behind its needs makes their outputs a tree of hard links as it
    starts (before, they were not final); hostile paths stay inert."""
    source = tmp_path / "out $(touch pwned)"
    (source / "ckpt").mkdir(parents=True)
    (source / "ckpt" / "model.txt").write_text("w")
    destination = tmp_path / "inputs" / "train"
    lines = render_input_links([(str(source), str(destination))])
    subprocess.run(["bash", "-c", "\n".join(lines)], check=True, cwd=tmp_path)
    assert not destination.is_symlink()
    assert (destination / "ckpt" / "model.txt").stat().st_ino == (
        source / "ckpt" / "model.txt"
    ).stat().st_ino
    assert not (tmp_path / "pwned").exists()
    failing = render_input_links([(str(tmp_path / "missing"), str(destination))])
    result = subprocess.run(["bash", "-c", "\n".join(failing)], capture_output=True, text=True)
    assert result.returncode == 1 and "cannot stage" in result.stderr
