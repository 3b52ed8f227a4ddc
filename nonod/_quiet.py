"""A warning a client can cause at will, logged at most once a second.

Refusals that a hostile client repeats (a connection over its budget, a peer of another uid)
must be visible in the log without letting that client fill it: the first in each second is
logged, with the number left out since the last one.
"""

from __future__ import annotations

import time
from typing import final

import structlog

log = structlog.get_logger()


@final
class QuietWarning:
    """``warn(**fields)`` logs ``event`` once a second at most, counting what it leaves out."""

    def __init__(self, event: str, *, interval: float = 1.0) -> None:
        self._event = event
        self._interval = interval
        self._logged_at = -1e9
        self._quiet = 0

    def warn(self, **fields: object) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self._interval:
            log.warning(self._event, suppressed=self._quiet, **fields)
            self._logged_at, self._quiet = now, 0
        else:
            self._quiet += 1
