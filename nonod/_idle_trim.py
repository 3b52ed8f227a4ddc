"""Memory a burst of work left behind, given back once the daemon has gone quiet.

A burst leaves two kinds of it:

- garbage in reference cycles: a session with a proxy ends as a cycle (the session, its
  proxy server and acceptor, their trio nurseries and finished tasks, its records), which
  only the cyclic collector frees, and an idle daemon allocates too little to run a full
  collection for hours: 300 such sessions, stopped and pruned, were all still there. What
  the collection frees goes back to CPython's allocator, which returns an arena only once
  every block in it is free: about 1 MiB of 17 after those 300 (docs/benchmarks.md,
  "idle4"); the rest is reused by the next burst. On glibc's ``malloc``
  (``PYTHONMALLOC=malloc``, docs/operations.md) the trim below returns 5 MiB more of it;
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

import structlog
import trio

from . import _malloc
from ._malloc import CHECK, QUIET, Burst

log = structlog.get_logger()


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
