"""A user certificate that expires while a run's job is running on a real SLURM cluster:
the stage waits, saying "credentials for site leonardo expired at T: renew them", and
continues by itself once the certificate is renewed; nothing fails or is resubmitted.

The login node is this test's own sshd in front of the sandbox's site-a cluster (same
environment as site-a's sshd, but logins by user certificate only); the shared
sandbox's sshd is not touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.partner import Partner
from registry.site import Site
from registry.states import JobState, RunState
from registry.store import Store
from tests.helpers import HPCFLEET, REPO, cli_env, wait_until, write_yaml
from tests.integration.test_ssh_certificates import (
    SIGN,
    _free_port,
    _keygen,
    _stop,
    start_sshd,
)
from tests.sandbox.documents import slurm_site_document
from tests.sandbox.sandbox import Sandbox

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]
RUN_TIMEOUT = 240


class CertLogin:
    """An sshd for site-a's cluster that accepts only certificates of `user_ca`."""

    def __init__(self, sandbox: Sandbox, directory: Path) -> None:
        site = sandbox.site("site-a")
        self.user = site.user
        self.user_ca = _keygen(directory / "user_ca")
        self.user_key = _keygen(directory / "id_ed25519")
        host_key = _keygen(directory / "host_key")
        self.host_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        self.port = _free_port()
        site_config = (sandbox.base_dir / "site-a" / "ssh" / "sshd_config").read_text()
        environment = "".join(
            f"{line}\n"
            for line in site_config.splitlines()
            if line.startswith(("SetEnv ", "Subsystem "))
        )
        self.sign("-1m:+1h")
        self.process = start_sshd(
            directory,
            "127.0.0.1",
            self.port,
            f"HostKey {host_key}\nTrustedUserCAKeys {self.user_ca}.pub\n"
            f"AuthorizedKeysFile none\n{environment}",
            user=self.user,
        )

    @property
    def pub(self) -> str:
        return f"{self.user_key}.pub"

    def sign(self, validity: str) -> None:
        subprocess.run(
            [*SIGN, str(self.user_ca), "-I", "e2e", "-n", self.user, "-V", validity, self.pub],
            check=True,
        )

    def drop_sessions(self) -> None:
        """End every open login (our sshd's per-connection children), as a login node
        reboot or a network cut would: the next command must log in again."""
        for child in _children(self.process.pid):
            os.kill(child, signal.SIGTERM)

    def document(self, sandbox: Sandbox) -> dict[str, object]:
        document = slurm_site_document(sandbox.site("site-a"), "cuni", name="leonardo")
        document["ssh"] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.user_key),
            "certificate_file": f"{self.user_key}-cert.pub",
            "host_keys": [self.host_key],
        }
        return document


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture
def cert_login(slurm_sandbox: Sandbox, tmp_path: Path) -> Iterator[CertLogin]:
    (tmp_path / "login").mkdir()
    login = CertLogin(slurm_sandbox, tmp_path / "login")
    try:
        yield login
    finally:
        _stop(login.process)


def test_a_stage_waits_for_renewed_credentials_and_then_completes(
    slurm_sandbox: Sandbox, cert_login: CertLogin, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(home)
    env.update(HPCFLEET_PARTNER="cuni")
    store = Store.open(f"sqlite:///{home / 'registry.db'}")
    store.put_partner(Partner(id="cuni", name="Charles University", country="CZ"))
    store.put_site(Site.model_validate(cert_login.document(slurm_sandbox)), "cuni")
    spec = write_yaml(
        tmp_path / "run.yaml",
        {
            "name": "certificate-expiry",
            "stages": [
                {
                    "name": "train",
                    "site": "leonardo",
                    "outputs": ["done"],
                    "script": 'sleep 15; echo ok > "$HPCFLEET_OUTPUTS/done"',
                }
            ],
        },
    )
    log_path = tmp_path / "orchestrator.log"
    with log_path.open("wb") as log:
        orchestrator = subprocess.Popen(
            [*HPCFLEET, "run", "launch", str(spec), "--wait"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ended = orchestrator.poll
        wait_until(lambda: _job_state(store) is JobState.RUNNING or ended() is not None, 120, 0.5)
        assert ended() is None, log_path.read_text()
        cert_login.sign("-2m:-1m")  # the certificate ran out a minute ago
        cert_login.drop_sessions()
        wait_until(lambda: "expired at" in _stage_reason(store) or ended() is not None, 60, 0.5)
        reason = _stage_reason(store)
        cert_login.sign("-1m:+1h")  # what `step ssh login` does
        assert orchestrator.wait(timeout=RUN_TIMEOUT) == 0, log_path.read_text()
    finally:
        if orchestrator.poll() is None:
            os.killpg(orchestrator.pid, signal.SIGKILL)
            orchestrator.wait()

    assert reason.startswith("credentials for site leonardo expired at ")
    assert reason.endswith("renew them, e.g. `step ssh login`")
    [run] = store.list_runs()
    assert run.state is RunState.COMPLETED
    [stage] = store.stages(run.run_id)
    assert stage.reason is None  # the waiting text is gone once it continued
    jobs = store.jobs(run.run_id, "train")
    assert [(j.attempt, j.state) for j in jobs] == [(1, JobState.COMPLETED)]  # not resubmitted
    store.close()


def _job_state(store: Store) -> JobState | None:
    runs = store.list_runs()
    jobs = store.jobs(runs[0].run_id, "train") if runs else []
    return jobs[0].state if jobs else None


def _stage_reason(store: Store) -> str:
    runs = store.list_runs()
    stages = store.stages(runs[0].run_id) if runs else []
    return (stages[0].reason or "") if stages else ""
