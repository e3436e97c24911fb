"""The launcher: a task's command fans out over its allocation (srun outside, the
container inside, rank variables per task); the site's setup, expanding env and offline.

Golden files live in tests/data/launcher/; `UPDATE_GOLDEN=1 pytest ...` rewrites them
(review the diff before committing).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from registry.errors import DocumentError
from registry.loading import parse_yaml, validate_document
from registry.runspec import RunSpec
from registry.site import Container, Environment, Partition, Site, SlurmSettings
from sites.jobscript import expanding_quote, render_job_body
from sites.launcher import Launch, launch_command, plan_launch, rank_wrapper
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.slurm.script import render_sbatch
from tests.helpers import DATA, assert_golden

GOLDEN = DATA / "launcher"
LUMI = SlurmSettings(
    account="project_465000001",
    partitions=[Partition(name="standard-g", gpus_per_node=8, gpu_type="mi250x")],
    srun_flags=["--cpu-bind=cores", "--gpus-per-task=1"],
)
LUMI_ENV = Environment(
    setup=["module purge", "module use /appl/local/csc/modulefiles"],
    modules=["pytorch/2.4"],
    env={"MIOPEN_USER_DB_PATH": "/tmp/${USER}-miopen", "CACHE": "$HOME/cache"},
    container=Container(
        image="/scratch/project_465000001/c.sif",
        options=["--rocm"],
        binds=["/pfs", "/scratch", "/flash"],
    ),
    offline=True,
)


def train_request(**changes: Any) -> JobRequest:
    fields: dict[str, Any] = {
        "name": "hpcfleet-r1-train-1",
        "workdir": "/scratch/p/hpcfleet/r1/train",
        "log_dir": "/scratch/p/hpcfleet/r1/train/logs/1",
        "tasks": (TaskSpec(argv=("python3", "train.py", "--name", "it's $(not run)")),),
        "env": {"HPCFLEET_RUN_ID": "r1"},
        "resources": JobResources(nodes=4, tasks_per_node=8, cpus=7, gpus=8),
    }
    fields.update(changes)
    return JobRequest(**fields)


def words(line: str) -> list[str]:
    return shlex.split(line)


def task_line(body: str) -> str:
    """The command line of task 0 of a rendered body."""
    lines = body.splitlines()
    return lines[lines.index("  0)") + 1].strip()


# ---------------------------------------------------------------- golden scripts


def test_multi_node_container_job_matches_golden() -> None:
    assert_golden(GOLDEN / "srun_container.sh", render_sbatch(train_request(), LUMI, LUMI_ENV))


def test_local_fan_out_matches_golden(tmp_path: Any) -> None:
    request = train_request(resources=JobResources(tasks_per_node=3))
    script = LocalScheduler("laptop", tmp_path, environment=Environment()).render(request)
    assert_golden(GOLDEN / "local_fan_out.sh", script)


# ---------------------------------------------------------------- the order of things


def test_srun_runs_outside_and_the_container_inside_once_per_task() -> None:
    argv = words(task_line(render_sbatch(train_request(), LUMI, LUMI_ENV)))
    assert argv[0] == "srun"
    assert argv.index("--cpu-bind=cores") < argv.index("bash") < argv.index("apptainer")
    container = argv[argv.index("apptainer") :]
    assert container[:6] == [
        "apptainer",
        "exec",
        "--rocm",
        "--bind",
        "/pfs,/scratch,/flash",
        "/scratch/project_465000001/c.sif",
    ]
    assert container[6:] == ["python3", "train.py", "--name", "it's $(not run)"]
    assert argv.count("srun") == 1


def test_sbatch_asks_for_the_tasks_per_node() -> None:
    script = render_sbatch(train_request(), LUMI, LUMI_ENV)
    assert "#SBATCH --ntasks-per-node=8" in script.splitlines()
    one = render_sbatch(train_request(resources=JobResources(nodes=2)), LUMI, LUMI_ENV)
    assert "--ntasks-per-node" not in one  # sbatch's default: one task per node


def test_a_single_task_runs_as_before() -> None:
    request = train_request(resources=JobResources())
    line = task_line(render_job_body(request, LUMI_ENV, scheduler="slurm"))
    assert words(line)[:2] == ["apptainer", "exec"]
    assert "srun" not in words(line) and "MASTER_ADDR" not in render_job_body(request)


def test_launcher_none_keeps_one_command_that_calls_srun_itself() -> None:
    request = train_request(
        launcher="none", tasks=(TaskSpec(argv=("srun", "python3", "train.py")),)
    )
    body = render_job_body(request, Environment(), scheduler="slurm")
    assert task_line(body) == "srun python3 train.py"
    assert "MASTER_ADDR" not in body


def test_launcher_srun_applies_to_a_single_task_too() -> None:
    request = train_request(launcher="srun", resources=JobResources())
    assert words(task_line(render_job_body(request, scheduler="slurm")))[0] == "srun"


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (None, ["apptainer", "exec", "--rocm", "--bind", "/pfs,/scratch,/flash", "/s/c.sif"]),
        ("none", []),
        (
            "/other.sif",
            ["apptainer", "exec", "--rocm", "--bind", "/pfs,/scratch,/flash", "/other.sif"],
        ),
    ],
)
def test_a_stage_chooses_its_container(stage: str | None, expected: list[str]) -> None:
    site = Environment(
        container=Container(
            image="/s/c.sif", options=["--rocm"], binds=["/pfs", "/scratch", "/flash"]
        )
    )
    request = train_request(container=stage)
    argv = words(task_line(render_job_body(request, site, scheduler="slurm")))
    inner = argv[argv.index("hpcfleet-task") + 1 :]
    assert inner == [*expected, "python3", "train.py", "--name", "it's $(not run)"]


def test_a_stage_image_on_a_site_without_container_uses_apptainer() -> None:
    request = train_request(container="/mine.sif", resources=JobResources())
    assert task_line(render_job_body(request)).startswith("apptainer exec /mine.sif python3")


# ---------------------------------------------------------------- rank variables


def run_wrapper(preset: set[str], env: dict[str, str]) -> dict[str, str]:
    """Run the per-task wrapper in a real bash with SLURM's per-task variables set."""
    command = ["bash", "-c", rank_wrapper(preset), "hpcfleet-task", "env"]
    result = subprocess.run(
        command, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_each_task_gets_its_rank_from_slurm() -> None:
    slurm = {"SLURM_PROCID": "13", "SLURM_LOCALID": "5", "SLURM_NODEID": "1", "SLURM_NTASKS": "32"}
    seen = run_wrapper(set(), slurm)
    assert (seen["RANK"], seen["LOCAL_RANK"], seen["NODE_RANK"], seen["WORLD_SIZE"]) == (
        "13",
        "5",
        "1",
        "32",
    )


def test_the_wrapper_passes_hostile_arguments_through_unchanged() -> None:
    hostile = ["it's", "$(touch /tmp/hpcfleet-canary)", "a b", "`id`", '"q"', "\\"]
    line = launch_command(TaskSpec(argv=("printf", "%s\\n", *hostile)), Launch(kind="srun"))
    argv = words(line)
    inner = argv[argv.index("bash") :]  # what srun would exec
    shown = subprocess.run(inner, capture_output=True, text=True, check=True)
    assert shown.stdout.splitlines() == hostile


def test_variables_the_site_or_stage_sets_are_kept() -> None:
    site = Environment(env={"MASTER_PORT": "29500"})
    request = train_request(env={"RANK": "0"})
    body = render_job_body(request, site, scheduler="slurm")
    assert 'export MASTER_PORT="29500"' in body
    assert "export MASTER_PORT=$(" not in body
    assert 'RANK="${SLURM_PROCID}"' not in body
    assert 'LOCAL_RANK="${SLURM_LOCALID}"' in body
    launch = plan_launch(request, "slurm", site)
    assert launch.preset == {"MASTER_PORT", "RANK"}


def test_master_address_and_port_come_from_the_allocation() -> None:
    body = render_job_body(train_request(), scheduler="slurm")
    assert (
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"'
        in body.splitlines()
    )
    port = subprocess.run(
        [
            "bash",
            "-c",
            "SLURM_JOB_ID=123456; " + _line(body, "export MASTER_PORT=") + "; echo $MASTER_PORT",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert port.stdout.strip() == str(20000 + 123456 % 12000)


def _line(body: str, start: str) -> str:
    return next(line for line in body.splitlines() if line.startswith(start))


def test_local_sites_fan_out_tasks_per_node_only() -> None:
    two_nodes = train_request(resources=JobResources(nodes=2))
    assert plan_launch(two_nodes, "local", Environment()).kind == "none"
    assert plan_launch(two_nodes, "slurm", Environment()).kind == "srun"


def test_local_fan_out_starts_every_rank_and_fails_if_one_fails(tmp_path: Any) -> None:
    script = "echo $RANK/$LOCAL_RANK/$WORLD_SIZE/$MASTER_ADDR >> ranks; [ $RANK != 2 ]"
    request = train_request(
        workdir=str(tmp_path),
        tasks=(TaskSpec(script=script),),
        resources=JobResources(tasks_per_node=4),
    )
    body = render_job_body(request)
    result = subprocess.run(["bash", "-c", body], capture_output=True, text=True)
    assert result.returncode == 1
    ranks = sorted((tmp_path / "ranks").read_text().split())
    assert ranks == [f"{r}/{r}/4/127.0.0.1" for r in range(4)]


# ---------------------------------------------------------------- site environment


def test_setup_runs_after_module_init_and_before_module_load() -> None:
    lines = render_job_body(train_request(), LUMI_ENV).splitlines()
    init = lines.index("if ! type module >/dev/null 2>&1; then")
    purge = lines.index("module purge")
    use = lines.index("module use /appl/local/csc/modulefiles")
    load = lines.index("module load pytorch/2.4")
    assert init < purge < use < load


def test_site_env_expands_variables_and_nothing_else() -> None:
    value = '/tmp/${USER}-x $HOME "q" \\ $1 $ end$'
    site = Environment(env={"P": value})
    line = _line(render_job_body(train_request(), site), "export P=")
    shown = subprocess.run(
        ["bash", "-c", f'{line}; printf %s "$P"'],
        env={"USER": "ann", "HOME": "/home/ann"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == '/tmp/ann-x /home/ann "q" \\ $1 $ end$'


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8")))
def test_site_env_without_variables_reads_back_exactly(value: str) -> None:
    assume(not re.search(r"\$[A-Za-z_{]", value))  # no $VAR / ${VAR}: nothing to expand
    shown = subprocess.run(
        ["bash", "-c", f'export P={expanding_quote(value)}; printf %s "$P"'],
        capture_output=True,
        check=True,
    )
    assert shown.stdout.decode() == value


def test_run_spec_env_stays_literal() -> None:
    body = render_job_body(train_request(env={"P": "$HOME"}))
    assert "export P='$HOME'" in body


def test_site_add_names_the_field_and_points_to_setup() -> None:
    text = "name: s\npartner: p\nscheduler: local\nenvironment:\n  env: {D: '$(date)'}\n"
    with pytest.raises(DocumentError) as info:
        validate_document(parse_yaml(text, "s.yaml"), Site, source="s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: environment.env: D: '$(' is not allowed")
    assert "'setup:'" in message


@pytest.mark.parametrize("value", ["$(id)", "`id`", "${A:-$(id)}", "${A:-x}", "$((1+2))", "${A"])
def test_site_env_commands_are_refused_with_a_pointer_to_setup(value: str) -> None:
    with pytest.raises(ValidationError, match="setup"):
        Environment(env={"A": value})


def test_offline_sites_switch_the_hubs_off_unless_the_job_says_otherwise() -> None:
    body = render_job_body(train_request(env={"WANDB_MODE": "disabled"}), LUMI_ENV)
    lines = body.splitlines()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert f"export {name}=1" in lines
    assert "export WANDB_MODE=disabled" in lines
    assert "export WANDB_MODE=offline" not in lines


@pytest.mark.parametrize("bind", ["/a,/b", "", "/a\n/b"])
def test_a_bind_is_one_path(bind: str) -> None:
    with pytest.raises(ValidationError, match="bind"):
        Container(image="/c.sif", binds=[bind])


# ---------------------------------------------------------------- run spec


def spec(**stage: Any) -> RunSpec:
    return RunSpec.model_validate(
        {"name": "r", "stages": [{"name": "s", "site": "a", "command": ["true"], **stage}]}
    )


def test_run_spec_fields_reach_the_job_request() -> None:
    from flows.jobs import build_request
    from flows.layout import StageLayout
    from tests.helpers import local_site

    document = spec(resources={"nodes": 2, "tasks_per_node": 4}, launcher="srun", container="none")
    request = build_request(
        document,
        document.stage("s"),
        local_site("a", "p"),
        run_id="x",
        attempt=1,
        layout=StageLayout("/w", "x", "s"),
        partition=None,
    )
    assert (request.resources.nodes, request.resources.tasks_per_node) == (2, 4)
    assert (request.launcher, request.container) == ("srun", "none")


@pytest.mark.parametrize(
    "stage",
    [
        {"resources": {"tasks_per_node": 0}},
        {"resources": {"tasks_per_node": 100_000}},
        {"launcher": "mpirun"},
        {"container": ""},
        {"container": "a\nb"},
    ],
)
def test_run_spec_refuses_bad_launch_fields(stage: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec(**stage)
