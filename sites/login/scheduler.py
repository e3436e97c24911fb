"""`LoginScheduler`: the `Scheduler` of `where: login` stages, on any `Transport`.

A login task runs on the site's login node (over the site's one SSH connection, or on
this machine when hpcfleet runs there), detached, under a time limit, at most
`policy.login_tasks` at once. The shell it takes is built in `sites.login.commands`;
this class runs it through the transport and checks what comes back.

The job script is the shared body (`sites.jobscript`) without `environment.offline`:
a login task is there to download what the offline compute nodes cannot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from registry.site import Environment
from sites.errors import SchedulerError
from sites.jobscript import render_job_body
from sites.login.commands import (
    KILL_GRACE_SECONDS,
    BadLoginOutput,
    cancel_command,
    find_by_name_command,
    is_login_job_id,
    parse_found_ids,
    parse_status,
    parse_submit,
    render_wrapper,
    settle,
    state_root,
    status_command,
    submit_command,
)
from sites.scheduler import JobRequest, JobStatus
from sites.transport import CommandResult, Transport


def login_environment(environment: Environment) -> Environment:
    """The site's environment as a login task sees it: online."""
    return environment.model_copy(update={"offline": False})


def render_login_script(request: JobRequest, environment: Environment) -> str:
    """The job script of a login task (pure): a header, then the shared job body."""
    if request.is_array or len(request.tasks) != 1:
        raise ValueError("a login-node task runs one command, not an array")
    header = [
        "#!/bin/bash",
        f"# hpcfleet login-node task {json.dumps(request.name)}",
        f"# time_seconds={request.resources.time_seconds} (enforced); no other resources",
    ]
    body = render_job_body(request, login_environment(environment))
    return "\n".join(header) + "\n" + body


class LoginScheduler:
    """Run `where: login` tasks on a site's login node through `transport`."""

    def __init__(
        self,
        site: str,
        transport: Transport,
        workdir: str,
        *,
        slots: int = 1,
        environment: Environment | None = None,
        kill_grace_seconds: int = KILL_GRACE_SECONDS,
    ) -> None:
        self.site = site
        self.transport = transport
        self.root = state_root(workdir)
        self.slots = slots
        self.environment = environment or Environment()
        self.kill_grace_seconds = kill_grace_seconds

    def render(self, request: JobRequest) -> str:
        return render_login_script(request, self.environment)

    def submit(self, request: JobRequest) -> str:
        if request.after_ok or request.link_inputs:
            # Nothing on a login node would wait for them: the caller waits instead.
            raise SchedulerError(
                self.site, f"job {request.name!r}: a login-node task takes no afterok dependencies"
            )
        try:
            script = self.render(request)
            wrapper = render_wrapper(
                root=self.root,
                stdout=request.stdout_path(0),
                stderr=request.stderr_path(0),
                time_seconds=request.resources.time_seconds,
                slots=self.slots,
                grace_seconds=self.kill_grace_seconds,
            )
            command = submit_command(
                root=self.root,
                name=request.name,
                wrapper=wrapper,
                log_dir=request.log_dir,
                workdir=request.workdir,
                umask=self.environment.effective_umask,
            )
        except ValueError as exc:
            raise SchedulerError(self.site, f"job {request.name!r}: {exc}") from exc
        result = self.transport.run(command, stdin=script.encode("utf-8"))
        try:
            return parse_submit(result.returncode, result.stdout, result.stderr)
        except BadLoginOutput as exc:
            raise SchedulerError(self.site, f"job {request.name!r}: {exc}") from exc

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Every asked-for task the site knows, in ONE command."""
        ids = [j for j in dict.fromkeys(job_ids) if is_login_job_id(j)]
        if not ids:
            return {}
        result = self._run(status_command(self.root, ids), "cannot read login task state")
        try:
            tasks, here, now = parse_status(result.stdout, ids)
        except BadLoginOutput as exc:
            raise SchedulerError(self.site, f"login task state: {exc}") from exc
        statuses = {}
        for job_id, task in tasks.items():
            state, reason = settle(task, here, now)
            elapsed = None
            if task.started is not None:
                until = task.ended or now or task.started
                elapsed = max(0.0, (until - task.started).total_seconds())
            statuses[job_id] = JobStatus(
                job_id=job_id,
                state=state,
                exit_code=task.exit_code,
                name=task.name,
                started=task.started,
                ended=task.ended,
                elapsed_seconds=elapsed,
                node=task.host,
                reason=reason,
            )
        return statuses

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [j for j in dict.fromkeys(job_ids) if is_login_job_id(j)]
        if ids:
            self._run(cancel_command(self.root, ids), "cannot cancel login tasks")

    def exclude_nodes(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        """Nothing to do: a login task runs on the login node that started it."""

    def find_by_name(self, name: str) -> list[JobStatus]:
        result = self._run(find_by_name_command(self.root, name), "cannot list login tasks")
        ids = parse_found_ids(result.stdout)
        if not ids:
            return []
        return [s for s in self.status(ids).values() if s.name == name]

    def _run(self, command: str, what: str) -> CommandResult:
        result = self.transport.run(command)
        if not result.ok:
            raise SchedulerError(self.site, f"{what}: {result.stderr.strip()[:500]}")
        return result
