"""Login-node tasks (`where: login` stages): `commands` (pure shell and parsers) and
`scheduler` (`LoginScheduler`, over any `Transport`).
"""

from __future__ import annotations

from sites.login.scheduler import LoginScheduler

__all__ = ["LoginScheduler"]
