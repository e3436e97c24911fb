"""Riding out a site's bad minutes: retry an operation while its error says a retry can
help (`transient`), with exponential backoff, up to a deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from registry.errors import HpcfleetError

T = TypeVar("T")
log = logging.getLogger(__name__)

# Long enough for a login node's sshd restart or a short network cut; a site that stays
# away longer fails the stage with the reason.
MAX_WAIT_SECONDS = 300.0


def with_retries(
    operation: Callable[[], T],
    what: str,
    *,
    max_wait: float = MAX_WAIT_SECONDS,
    first_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`operation()`, retried on transient HpcfleetErrors until `max_wait` has passed."""
    waited, delay = 0.0, first_delay
    while True:
        try:
            return operation()
        except HpcfleetError as exc:
            if not exc.transient or waited + delay > max_wait:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
            sleep(delay)
            waited += delay
            delay = min(delay * 2, 60.0)
