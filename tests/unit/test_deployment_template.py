"""The work pool's base job template (`flows.deployment.pinned_job_template`): what a
caller of Prefect's API puts in `job_variables` cannot change the command, working
directory or environment of a flow run. Rendered with Prefect's own code, as its worker
renders it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prefect.workers.process import ProcessJobConfiguration

from flows.deployment import CODE_ROOT, flow_run_command, pinned_job_template

HOSTILE = {
    "command": "touch /tmp/hpcfleet-canary",
    "working_dir": "/tmp",
    "env": {"HPCFLEET_DATABASE_URL": "sqlite:////tmp/evil.db", "LD_PRELOAD": "/tmp/evil.so"},
}


def configuration(values: dict[str, Any]) -> ProcessJobConfiguration:
    # The template references no block or variable, so Prefect never calls the client:
    # a stand-in spares this test the temporary Prefect server it would otherwise start.
    no_api: Any = object()
    return asyncio.run(ProcessJobConfiguration.from_template_and_values(
        pinned_job_template("/opt/python/bin/python"), values, client=no_api))


@pytest.mark.parametrize("hostile", [
    *({k: v} for k, v in HOSTILE.items()), HOSTILE, {"env.LD_PRELOAD": "/tmp/evil.so"}])
def test_hostile_job_variables_do_not_change_what_runs(hostile: dict[str, Any]) -> None:
    config = configuration(hostile)
    assert config.command == flow_run_command("/opt/python/bin/python")
    assert config.command == "/opt/python/bin/python -m prefect.engine"
    assert config.working_dir == CODE_ROOT
    assert config.env == {}


def test_callers_may_set_only_harmless_variables() -> None:
    variables = pinned_job_template()["variables"]
    assert set(variables["properties"]) == {"name", "labels", "stream_output"}
    assert variables["additionalProperties"] is False
