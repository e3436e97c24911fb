"""render_sbatch: golden files, sbatch's directive parser, hostile values.

Golden files live in tests/data/slurm/golden/; `UPDATE_GOLDEN=1 pytest ...` rewrites them
(review the diff before committing).
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from registry.site import Container, Environment, Partition, SlurmSettings
from sites.scheduler import JobRequest, JobResources, TaskSpec
from sites.slurm.script import render_sbatch, sbatch_quote
from tests.helpers import DATA, assert_golden

GOLDEN = DATA / "slurm" / "golden"

SITE = SlurmSettings(
    account="project_465000001",
    qos="normal",
    partitions=[
        Partition(name="small-g", gpus_per_node=8, gpu_type="mi250x"),
        Partition(name="small", default=True),
    ],
)
BARE_SITE = SlurmSettings(partitions=[Partition(name="cpu")])
ENV = Environment(
    modules=["LUMI/24.03", "partition/G"],
    env={"HF_HOME": "/scratch/project_465000001/hf"},
)


def sbatch_arguments(line: str) -> list[str]:
    """The arguments sbatch reads from one `#SBATCH` line: a port of `_get_argument`
    in slurm's src/sbatch/opt.c (22.05), which is not a shell."""
    rest = line.removeprefix("#SBATCH")
    args: list[str] = []
    i = 0
    while True:
        while i < len(rest) and rest[i].isspace():
            i += 1
        if i >= len(rest):
            return args
        arg: list[str] = []
        quote, escape = "", False
        while i < len(rest) and (quote or not rest[i].isspace()):
            c = rest[i]
            i += 1
            if escape:
                escape = False
            elif c == "\\":
                escape = True
                continue
            elif quote:
                if c == quote:
                    quote = ""
                    continue
            elif c in "\"'":
                quote = c
                continue
            elif c == "#":
                return [*args, "".join(arg)] if arg else args
            arg.append(c)
        assert not quote, f"unmatched quote in {line!r}"
        args.append("".join(arg))


def header(script: str) -> dict[str, str]:
    """option -> value, as sbatch reads the script's directives."""
    options: dict[str, str] = {}
    for line in script.splitlines()[1:]:
        if not line.startswith("#SBATCH"):
            break
        for arg in sbatch_arguments(line):
            key, _, value = arg.partition("=")
            options[key] = value
    return options


def test_plain_job_matches_golden_file() -> None:
    request = JobRequest(
        name="hpcfleet-r1-prepare-1",
        workdir="/scratch/p/hpcfleet/r1/prepare",
        log_dir="/scratch/p/hpcfleet/r1/prepare/logs/1",
        tasks=(TaskSpec(argv=("python3", "prepare.py", "--seed", "1")),),
        env={"HPCFLEET_RUN_ID": "r1", "HPCFLEET_STAGE": "prepare"},
        resources=JobResources(cpus=2, mem_mb=1024, time_seconds=600),
    )
    assert_golden(GOLDEN / "plain.sh", render_sbatch(request, SITE, ENV))


def test_array_job_matches_golden_file() -> None:
    request = JobRequest(
        name="hpcfleet-r1-evaluate-2",
        workdir="/scratch/p/hpcfleet/r1/evaluate",
        log_dir="/scratch/p/hpcfleet/r1/evaluate/logs/2",
        tasks=tuple(
            TaskSpec(
                argv=("python3", "evaluate.py", "--lang", lang),
                env={"HPCFLEET_ARRAY_VALUE": lang},
                array_value=lang,
            )
            for lang in ("bg", "cs", "da")
        ),
        resources=JobResources(
            nodes=2, cpus=8, gpus=4, mem_mb=1500, time_seconds=2 * 86400 + 3661, partition="small-g"
        ),
        after_ok=("4242", "4243"),
        exclude_nodes=("nid001", "nid002"),
        launcher="none",  # the srun launcher has its own golden files (test_launcher.py)
    )
    site = SITE.model_copy(update={"extra_flags": ["--exclusive", "--constraint=mi250x"]})
    env = ENV.model_copy(
        update={
            "container": Container(image="/appl/pytorch.sif", options=["--rocm", "-B", "/scratch"])
        }
    )
    assert_golden(GOLDEN / "array.sh", render_sbatch(request, site, env))


def test_chained_segment_matches_golden_file() -> None:
    # Segment 3 of a `chain: N` stage: runs only if segments 1 and 2 both ended without
    # completing (time limit, node failure, ...).
    request = JobRequest(
        name="hpcfleet-r1-train-3",
        workdir="/scratch/p/hpcfleet/r1/train",
        log_dir="/scratch/p/hpcfleet/r1/train/logs/3",
        tasks=(TaskSpec(argv=("python3", "train.py", "--resume")),),
        env={"HPCFLEET_RUN_ID": "r1", "HPCFLEET_STAGE": "train", "HPCFLEET_ATTEMPT": "3"},
        resources=JobResources(gpus=8, time_seconds=2 * 86400, partition="small-g"),
        after_not_ok=("4300", "4301"),
        exclude_nodes=("nid007",),
        end_marker="/scratch/p/hpcfleet/r1/train/attempt-3/logs/ended",
        earlier_end_markers=(
            "/scratch/p/hpcfleet/r1/train/attempt-1/logs/ended",
            "/scratch/p/hpcfleet/r1/train/attempt-2/logs/ended",
        ),
    )
    assert_golden(GOLDEN / "segment.sh", render_sbatch(request, SITE, ENV))


def test_segments_behind_needs_wait_for_both_kinds_of_dependency() -> None:
    request = JobRequest(
        name="hpcfleet-r1-train-2",
        workdir="/w",
        log_dir="/w/logs/2",
        tasks=(TaskSpec(argv=("true",)),),
        after_ok=("4242", "4243"),
        after_not_ok=("4301",),
    )
    options = header(render_sbatch(request, BARE_SITE, Environment()))
    # A comma: every part must hold (sbatch(1), --dependency; "?" would be either).
    assert options["--dependency"] == "afterok:4242:4243,afternotok:4301"
    assert options["--kill-on-invalid-dep"] == "yes"


def test_header_says_what_the_request_asks() -> None:
    request = JobRequest(
        name="n",
        workdir="/w",
        log_dir="/w/logs",
        tasks=(TaskSpec(argv=("true",)),) * 3,
        resources=JobResources(gpus=1, time_seconds=90, partition="gpu"),
        after_ok=("7",),
    )
    options = header(render_sbatch(request, BARE_SITE, Environment()))
    assert options == {
        "--job-name": "n",
        "--partition": "gpu",
        "--time": "00:01:30",
        "--nodes": "1",
        "--cpus-per-task": "1",
        "--gres": "gpu:1",
        "--array": "0-2",
        "--dependency": "afterok:7",
        "--kill-on-invalid-dep": "yes",
        "--output": "/w/logs/%a.out",
        "--error": "/w/logs/%a.err",
        "--chdir": "/w",
    }


def test_plain_job_writes_where_the_orchestrator_reads() -> None:
    request = JobRequest(
        name="n", workdir="/w", log_dir="/w/50% done", tasks=(TaskSpec(argv=("true",)),)
    )
    options = header(render_sbatch(request, BARE_SITE, Environment()))
    # sbatch turns "%%" into "%": the file is exactly request.stdout_path(0).
    assert options["--output"].replace("%%", "%") == request.stdout_path(0)
    assert options["--error"].replace("%%", "%") == request.stderr_path(0)
    assert "--array" not in options
    assert options["--partition"] == "cpu"  # the site's default


def test_array_index_reaches_the_task_selector() -> None:
    request = JobRequest(
        name="n", workdir="/w", log_dir="/l", tasks=(TaskSpec(argv=("true",)),) * 2
    )
    script = render_sbatch(request, BARE_SITE, Environment())
    export = 'export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"'
    assert export in script
    assert script.index(export) < script.index('case "${HPCFLEET_ARRAY_INDEX:-0}" in')


HOSTILE = [
    "$(touch /tmp/hpcfleet-canary)",
    "`touch /tmp/hpcfleet-canary`",
    "a; touch /tmp/hpcfleet-canary",
    'it\'s "quoted"',
    "back\\slash\\",
    "# not a comment",
    "  spaces  ",
]


@pytest.mark.parametrize("value", [*HOSTILE, ""])
def test_sbatch_quote_reads_back_exactly(value: str) -> None:
    assert sbatch_arguments(f"#SBATCH --job-name={sbatch_quote(value, 'job-name')}") == [
        f"--job-name={value}"
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_render_inert(value: str) -> None:
    request = JobRequest(
        name=value,
        workdir=f"/w/{value}",
        log_dir=f"/l/{value.replace(chr(92), '')}",
        tasks=(TaskSpec(argv=("echo", value), env={"X": value}, array_value=value),),
        env={"Y": value},
    )
    site = BARE_SITE.model_copy(update={"account": value, "qos": value})
    # A site's env expands $VAR; $( ) and backticks are refused (tests/unit/test_launcher.py).
    site_env = {} if "$(" in value or "`" in value else {"Z": value}
    script = render_sbatch(request, site, Environment(env=site_env))
    options = header(script)
    assert options["--job-name"] == value
    assert options["--chdir"] == f"/w/{value}"
    assert options["--account"] == value
    assert options["--qos"] == value
    body = script.split("\n", len(options) + 1)[-1]
    # In the body (run by bash) the value only ever appears as one quoted word.
    assert re.search(r"echo " + re.escape(shlex.quote(value)) + "$", body, re.M)
    assert f"export X={shlex.quote(value)}" in body
    assert f"export Y={shlex.quote(value)}" in body
    if site_env:
        line = next(line for line in body.splitlines() if line.startswith("export Z="))
        shown = subprocess.run(
            ["bash", "-c", f'{line}; printf %s "$Z"'], capture_output=True, text=True, check=True
        )
        assert shown.stdout == value


@pytest.mark.parametrize(
    ("field", "request_update", "site_update"),
    [
        ("job-name", {"name": "a\n#SBATCH --uid=0"}, {}),
        ("chdir", {"workdir": "/w\rx"}, {}),
        ("output", {"log_dir": "/l\nx"}, {}),
        ("account", {}, {"account": "a\nb"}),
        ("qos", {}, {"qos": "q\n"}),
        ("extra_flags", {}, {"extra_flags": ["--comment=x\ntouch /tmp/x"]}),
        ("exclude", {"exclude_nodes": ("n1\nn2",)}, {}),
    ],
)
def test_line_breaks_in_directives_are_refused(
    field: str, request_update: dict[str, object], site_update: dict[str, object]
) -> None:
    fields: dict[str, object] = {
        "name": "n",
        "workdir": "/w",
        "log_dir": "/l",
        "tasks": (TaskSpec(argv=("true",)),),
    }
    request = JobRequest(**(fields | request_update))  # type: ignore[arg-type]
    site = BARE_SITE.model_copy(update=site_update)
    with pytest.raises(ValueError, match=field):
        render_sbatch(request, site, Environment())


def test_backslash_in_log_dir_is_refused() -> None:
    request = JobRequest(name="n", workdir="/w", log_dir="/l\\x", tasks=(TaskSpec(argv=("true",)),))
    with pytest.raises(ValueError, match="log_dir"):
        render_sbatch(request, BARE_SITE, Environment())
