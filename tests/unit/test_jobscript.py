"""The scheduler-independent job body: golden output and environment name checks.

Regenerate the golden file with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_jobscript.py`
and review the diff.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from registry.site import Container, Environment
from sites.jobscript import check_env_name, render_exports, render_job_body
from sites.scheduler import JobRequest, TaskSpec
from tests.helpers import DATA, assert_golden

GOLDEN = DATA / "jobscript"


def hazardous_request() -> JobRequest:
    """A request whose every user value would break an unquoted script."""
    return JobRequest(
        name="hpcfleet-run1-eval-1",
        workdir="/scratch/my project/$USER/run1",
        tasks=(
            TaskSpec(
                argv=("python3", "eval.py", "--lang", "fi", "$(touch canary)", "a;b", "it's"),
                env={"HPCFLEET_ARRAY_VALUE": "fi", "NOTE": 'say "hi"\nbye'},
                array_value="fi",
            ),
            TaskSpec(script="echo `date` $HOME\nexit 0", array_value="sv"),
        ),
        env={"HF_HOME": "/scratch/hf cache", "PATTERN": "*.txt"},
    )


def test_job_body_matches_golden() -> None:
    environment = Environment(
        modules=["LUMI/24.03", "partition/G"],
        container=Container(image="/appl/pytorch image.sif"),
    )
    body = render_job_body(hazardous_request(), environment)
    assert_golden(GOLDEN / "job_body.sh", body)


def test_job_body_without_modules_or_container_has_neither() -> None:
    body = render_job_body(hazardous_request())
    assert "module load" not in body
    assert "apptainer" not in body


@pytest.mark.parametrize("name", ["HOME", "_x", "A1_B2", "hpcfleet_run"])
def test_valid_env_names_are_accepted(name: str) -> None:
    assert check_env_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1ABC", "A-B", "A B", "A=B", "$(id)", "A;rm", "ÄPFEL", "A\nB"]
)
def test_invalid_env_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        check_env_name(name)


def test_invalid_env_name_in_a_task_fails_the_whole_render() -> None:
    request = JobRequest(
        name="j", workdir="/w", tasks=(TaskSpec(argv=("true",), env={"BAD-NAME": "x"}),)
    )
    with pytest.raises(ValueError, match="BAD-NAME"):
        render_job_body(request)


def test_export_values_are_quoted_once() -> None:
    assert render_exports({"A": "it's $HOME"}) == ["export A='it'\"'\"'s $HOME'"]


def test_task_without_argv_or_script_is_rejected() -> None:
    request = JobRequest(name="j", workdir="/w", tasks=(TaskSpec(),))
    with pytest.raises(ValueError, match="argv or a script"):
        render_job_body(request)


def run_segment(tmp_path: Path, earlier: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Run a segment's body with bash in a directory whose name no shell may evaluate."""
    base = tmp_path / "p $(touch canary) 'x'"
    base.mkdir(exist_ok=True)
    request = JobRequest(
        name="hpcfleet-r1-train-2",
        workdir=str(base),
        tasks=(TaskSpec(script="touch ran; exit 3"),),
        end_marker=str(base / "2.ended"),
        earlier_end_markers=tuple(str(base / name) for name in earlier),
    )
    return subprocess.run(
        ["bash", "-c", render_job_body(request)], capture_output=True, text=True, cwd=tmp_path
    )


def test_a_segment_records_how_its_command_ended(tmp_path: Path) -> None:
    result = run_segment(tmp_path, ("1.ended",))
    base = tmp_path / "p $(touch canary) 'x'"
    assert result.returncode == 3
    assert (base / "ran").exists() and (base / "2.ended").read_text() == "3\n"
    assert not (tmp_path / "canary").exists() and not (base / "canary").exists()


def test_a_segment_after_one_that_ended_by_itself_runs_nothing(tmp_path: Path) -> None:
    base = tmp_path / "p $(touch canary) 'x'"
    base.mkdir()
    (base / "1.ended").write_text("0\n")
    result = run_segment(tmp_path, ("1.ended",))
    assert result.returncode == 0
    assert "an earlier segment ended (exit 0): nothing to resume" in result.stderr
    assert not (base / "ran").exists() and not (base / "2.ended").exists()
