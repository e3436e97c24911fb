"""`LocalScheduler.render`: golden job scripts, and rendering touches nothing.

Regenerate the golden files with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_local_render.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sites.local_scheduler import LocalScheduler
from sites.scheduler import JobRequest, JobResources, TaskSpec

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "local"


def assert_golden(text: str, name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8")


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
    assert_golden(scheduler.render(plain_request()), "plain_job.sh")


def test_array_job_script_with_modules_and_container_matches_golden(tmp_path: Path) -> None:
    scheduler = LocalScheduler(
        "laptop", tmp_path, modules=("python/3.11",), container=("apptainer", "exec", "t.sif")
    )
    assert_golden(scheduler.render(array_request()), "array_job.sh")


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
