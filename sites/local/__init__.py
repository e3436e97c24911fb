"""Local sites: commands and files on this machine, jobs as detached processes.

Modules: `transport` (`LocalTransport`), `scheduler` (`LocalScheduler`), `runner`
(`python -m sites.local.runner`, one per task). Kept cheap to import: the runner starts
from this package once per task, so the classes are imported on first use (importing
the scheduler eagerly would load pydantic through `registry.site` for every task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sites.local.scheduler import LocalScheduler
    from sites.local.transport import LocalTransport

__all__ = ["LocalScheduler", "LocalTransport"]


def __getattr__(name: str) -> object:
    if name == "LocalScheduler":
        from sites.local.scheduler import LocalScheduler

        return LocalScheduler
    if name == "LocalTransport":
        from sites.local.transport import LocalTransport

        return LocalTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
