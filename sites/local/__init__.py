"""Local sites: commands and files on this machine, jobs as detached processes.

Modules: `transport` (`LocalTransport`), `scheduler` (`LocalScheduler`), `runner`
(`python -m sites.local.runner`, one per task). Kept cheap to import: the runner starts
from this package once per task.
"""

from __future__ import annotations

from sites.local.scheduler import LocalScheduler
from sites.local.transport import LocalTransport

__all__ = ["LocalScheduler", "LocalTransport"]
