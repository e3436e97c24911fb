"""`WhereScheduler`: one `Scheduler` for a site whose jobs run in two places, the batch
scheduler and the login node (`where: login`, `sites.login`).

A request goes where it says (`JobRequest.where`); an id goes to the scheduler that
made it ("L7" is a login task, `sites.login.commands.LOGIN_ID`). So the flows drive
both through the one `driver.scheduler`, and a poll without login tasks costs nothing
more than before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sites.scheduler import JobRequest, JobStatus, Scheduler


class WhereScheduler:
    """Route each call to the batch scheduler or the login-node one."""

    def __init__(
        self, batch: Scheduler, login: Scheduler, *, is_login_id: Callable[[str], bool] | None
    ) -> None:
        """`is_login_id`: which ids the login scheduler made; None when both keep their
        jobs in the same place (a local site: one `LocalScheduler` root), so that every
        id, and every lookup by name, goes to the batch one."""
        self.batch = batch
        self.login = login
        self._is_login_id = is_login_id

    def _for(self, request: JobRequest) -> Scheduler:
        return self.login if request.where == "login" else self.batch

    def render(self, request: JobRequest) -> str:
        return self._for(request).render(request)

    def submit(self, request: JobRequest) -> str:
        return self._for(request).submit(request)

    def _split(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        if self._is_login_id is None:
            return list(job_ids), []
        login = [j for j in job_ids if self._is_login_id(j)]
        return [j for j in job_ids if not self._is_login_id(j)], login

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        batch, login = self._split(job_ids)
        result = self.batch.status(batch) if batch else {}
        if login:
            result.update(self.login.status(login))
        return result

    def cancel(self, job_ids: Sequence[str]) -> None:
        batch, login = self._split(job_ids)
        if batch:
            self.batch.cancel(batch)
        if login:
            self.login.cancel(login)

    def exclude_nodes(self, job_ids: Sequence[str], nodes: Sequence[str]) -> None:
        batch, _ = self._split(job_ids)  # a login task runs on the login node it is on
        if batch:
            self.batch.exclude_nodes(batch, nodes)

    def find_by_name(self, name: str) -> list[JobStatus]:
        found = self.batch.find_by_name(name)
        if self._is_login_id is not None:
            found += self.login.find_by_name(name)
        return found
