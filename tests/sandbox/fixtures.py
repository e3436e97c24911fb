"""pytest plugin with the SLURM sandbox fixtures.

Register it once, in the root ``tests/conftest.py``::

    pytest_plugins = ["tests.sandbox.fixtures"]

``slurm_sandbox`` (session) starts the sandbox once and stops it (without purge) at the
end; set ``HPC_SANDBOX_KEEP=1`` to leave it running. ``slurm_faults`` (function) hands
out the same sandbox for a test that injects faults and heals/restarts everything after.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.sandbox.sandbox import Sandbox, SandboxError


@pytest.fixture(scope="session")
def slurm_sandbox() -> Iterator[Sandbox]:
    """The running sandbox; skips without root, fails in CI if it cannot start."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM sandbox needs root (it starts sshd, slurmctld, munged)")
    sandbox = Sandbox()
    try:
        sandbox.up()
    except SandboxError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the SLURM sandbox did not come up:\n{error.output}", pytrace=False)
        pytest.skip(f"the SLURM sandbox did not come up: {error.output.strip()[-600:]}")
    yield sandbox
    if os.environ.get("HPC_SANDBOX_KEEP") != "1":
        sandbox.down()


@pytest.fixture
def slurm_faults(slurm_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox for a test that partitions, pauses or stops things; restored after."""
    yield slurm_sandbox
    slurm_sandbox.restore()
