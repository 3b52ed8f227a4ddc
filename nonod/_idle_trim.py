"""Memory a burst of work left behind, given back once the daemon has gone quiet.

A burst leaves two kinds of it:

- garbage in reference cycles: a session with a proxy ends as a cycle (the session, its
  proxy server and acceptor, their trio nurseries and finished tasks, its records: about
  60 KiB each), which only the cyclic collector frees, and an idle daemon allocates too
  little to run a full collection for hours. 300 such sessions left the daemon 17 MiB
  larger until the next burst; each survivor also keeps its allocator arena mapped
  (CPython frees an arena only once every block in it is free);
- free pages that glibc keeps for reuse in the C heap and the worker threads' arenas
  (``nonod._malloc``): a megabyte or two after a few hundred launches.

The daemon looks at its own CPU time (all threads) every ``CHECK`` seconds: after an
interval in which it used more than ``QUIET`` seconds of it (busy), the first in which it
used less ends the burst, and it collects (``gc.collect()``, in the event loop: a few
milliseconds), then trims, in a worker thread, once: the next time waits for the next burst.
A launch does not wait for it (the event loop only reads a clock), and a busy daemon is left
alone: its free memory is about to be used again.
"""

from __future__ import annotations

import gc
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
    """Run for the daemon's lifetime (``nonod._daemon``); without glibc it only collects."""
    burst = Burst(clock(), quiet=quiet)
    while True:
        await trio.sleep(interval)
        if burst.over(clock()):
            began = time.perf_counter()
            collected = gc.collect()
            took = time.perf_counter() - began
            returned = _malloc.can_trim() and await trio.to_thread.run_sync(_malloc.trim)
            log.debug("memory returned after a burst", collected=collected,
                      collect_ms=round(took * 1000, 1), returned=returned)
