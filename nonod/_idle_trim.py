"""Memory a burst of work left free, given back once the daemon has gone quiet.

After a few hundred launches the C heap and the worker threads' arenas hold a megabyte or
two of free pages that glibc keeps for reuse (``nonod._malloc``). The daemon looks at its own
CPU time (all threads) every ``CHECK`` seconds: once it has used ``WORK`` seconds of CPU
since the last trim and then at most ``QUIET`` over one whole interval, it trims, in a
worker thread, once: the next trim waits for the next burst. A launch never waits for it
(the event loop only reads a clock), and a busy daemon is never trimmed, its free pages
are about to be used again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, final

import structlog
import trio

from . import _malloc

log = structlog.get_logger()

CHECK: Final = 10.0  # seconds between looks at the CPU clock
WORK: Final = 0.05  # CPU seconds since the last trim that are worth one (a few launches)
QUIET: Final = 0.05  # CPU seconds over one interval at most: quiet (0.5 %)


@final
class Burst:
    """Decides, from readings of a CPU clock one interval apart, when a burst is over."""

    def __init__(self, cpu: float, *, work: float = WORK, quiet: float = QUIET) -> None:
        self._work = work
        self._quiet = quiet
        self._since = cpu  # the CPU clock at the last trim
        self._last = cpu  # at the last reading

    def over(self, cpu: float) -> bool:
        """True once per burst: enough work since the last trim, and a quiet interval."""
        quiet = cpu - self._last <= self._quiet
        self._last = cpu
        return quiet and cpu - self._since >= self._work

    def trimmed(self, cpu: float) -> None:
        self._since = self._last = cpu


async def trim_after_bursts(*, interval: float = CHECK,
                            clock: Callable[[], float] = time.process_time) -> None:
    """Run for the daemon's lifetime (``nonod._daemon``); returns at once without glibc."""
    if not _malloc.can_trim():
        return
    burst = Burst(clock())
    while True:
        await trio.sleep(interval)
        if burst.over(clock()):
            returned = await trio.to_thread.run_sync(_malloc.trim)
            burst.trimmed(clock())
            log.debug("free memory returned after a burst", returned=returned)
