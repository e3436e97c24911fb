"""`LocalScheduler.render`: golden job scripts, and rendering touches nothing.

Regenerate the golden files with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_local_render.py` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.site import Container, Environment
from sites.local.scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, TaskSpec
from tests.helpers import DATA, assert_golden

GOLDEN = DATA / "local"


def plain_request() -> JobRequest:
    return JobRequest(
        name="hpcfleet-run1-prepare-1",
        workdir="/home/me/.hpcfleet/work/run1/prepare",
        tasks=(TaskSpec(argv=("python3", "prepare.py", "--seed", "1")),),
        env={"HPCFLEET_RUN_ID": "run1", "HPCFLEET_STAGE": "prepare"},
        resources=JobResources(cpus=2, time_seconds=600),
        log_dir="/home/me/.hpcfleet/work/run1/prepare/logs",
    )


def array_request() -> JobRequest:
    languages = ("bg", "cs", "fi")
    return JobRequest(
        name="hpcfleet-run1-evaluate-2",
        workdir="/home/me/.hpcfleet/work/run1/evaluate",
        tasks=tuple(
            TaskSpec(
                argv=("python3", "evaluate.py", "--lang", lang),
                env={"HPCFLEET_ARRAY_VALUE": lang},
                array_value=lang,
            )
            for lang in languages
        ),
        resources=JobResources(gpus=1, time_seconds=3600),
        log_dir="/home/me/.hpcfleet/work/run1/evaluate/logs",
    )


def test_plain_job_script_matches_golden(tmp_path: Path) -> None:
    scheduler = LocalScheduler("laptop", tmp_path)
    assert_golden(GOLDEN / "plain_job.sh", scheduler.render(plain_request()))


def test_array_job_script_with_modules_and_container_matches_golden(tmp_path: Path) -> None:
    environment = Environment(modules=["python/3.11"], container=Container(image="t.sif"))
    scheduler = LocalScheduler("laptop", tmp_path, environment=environment)
    assert_golden(GOLDEN / "array_job.sh", scheduler.render(array_request()))


def test_render_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "site"
    LocalScheduler("laptop", root).render(array_request())
    assert not root.exists()


def test_a_job_name_cannot_escape_the_header_comment(tmp_path: Path) -> None:
    request = JobRequest(
        name="evil\ntouch /tmp/owned #", workdir="/w", tasks=(TaskSpec(argv=("true",)),)
    )
    script = LocalScheduler("laptop", tmp_path).render(request)
    assert "\ntouch /tmp/owned" not in script
    assert script.startswith("#!/bin/bash\n")


def test_bad_env_name_is_refused_at_render(tmp_path: Path) -> None:
    request = JobRequest(
        name="j", workdir="/w", tasks=(TaskSpec(argv=("true",)),), env={"A B": "x"}
    )
    with pytest.raises(ValueError, match="invalid environment variable name"):
        LocalScheduler("laptop", tmp_path).render(request)
