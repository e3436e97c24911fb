"""The scheduler-independent job body: golden output and environment name checks.

Regenerate the golden file with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_jobscript.py`
and review the diff.
"""

from __future__ import annotations

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
