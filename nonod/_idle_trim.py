"""Memory a burst of work left free, given back once the daemon has gone quiet.

After a few hundred launches the C heap and the worker threads' arenas hold a megabyte or
two of free pages that glibc keeps for reuse (``nonod._malloc``). The daemon looks at its own
CPU time (all threads) every ``CHECK`` seconds: after an interval in which it used more than
``QUIET`` seconds of it (busy), the first in which it used less ends the burst, and it trims,
in a worker thread, once: the next trim waits for the next burst. A launch does not wait for
it (the event loop only reads a clock), and a busy daemon is never trimmed: its free pages
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
# CPU seconds over one interval above which the daemon is busy (2 % of a CPU: about ten
# launches in ten seconds). At idle it uses a tenth of that or less (its heartbeat, the
# kernel's audit events it watches for denials), which never counts as a burst.
QUIET: Final = 0.2


@final
class Burst:
    """Decides, from readings of a CPU clock one interval apart, when a burst is over: at
    the first quiet interval after one or more busy ones."""

    def __init__(self, cpu: float, *, quiet: float = QUIET) -> None:
        self._quiet = quiet
        self._last = cpu
        self._busy = False

    def over(self, cpu: float) -> bool:
        used, self._last = cpu - self._last, cpu
        if used > self._quiet:
            self._busy = True
            return False
        over, self._busy = self._busy, False
        return over


async def trim_after_bursts(*, interval: float = CHECK, quiet: float = QUIET,
                            clock: Callable[[], float] = time.process_time) -> None:
    """Run for the daemon's lifetime (``nonod._daemon``); returns at once without glibc."""
    if not _malloc.can_trim():
        return
    burst = Burst(clock(), quiet=quiet)
    while True:
        await trio.sleep(interval)
        if burst.over(clock()):
            returned = await trio.to_thread.run_sync(_malloc.trim)
            log.debug("free memory returned after a burst", returned=returned)
