"""The C allocator's settings that decide how much freed memory a long-lived process keeps.

Python hands blocks over 512 bytes, and its own 1 MiB arenas, to the C library's ``malloc``
(every block, in a process started with ``PYTHONMALLOC=malloc``: the fork server). glibc
keeps what is freed for reuse, and two of its habits make a process that has worked stay
larger than one that has not:

- a free at the top of the heap is returned only past a threshold, and a free anywhere
  else is never returned until ``malloc_trim``: :func:`trim` returns every free page of
  every arena (the main one, and those of threads, which outlive their threads);
- a large buffer freed raises the size above which buffers are mapped on their own (up to
  32 MiB), so that later buffers under it come from the heap and leave it fragmented:
  :func:`fix_mmap_threshold` keeps the threshold where it is.

:class:`Burst` decides when a burst of work is over (the daemon's ``nonod._idle_trim``, the
fork server's loop through :class:`TrimAfterBursts`). Elsewhere (musl, macOS) the trims do
nothing and return False. Imports only ctypes and time: the fork server loads this module.
"""

from __future__ import annotations

import ctypes
import time
from typing import Final, final

_libc = ctypes.CDLL(None)
_mallopt = getattr(_libc, "mallopt", None)
_malloc_trim = getattr(_libc, "malloc_trim", None)

# glibc's <malloc.h>
M_MMAP_THRESHOLD: Final = -3

#: Buffers of this size and more are mapped on their own and unmapped when freed (glibc's
#: starting value, pinned).
MMAP_THRESHOLD: Final = 128 * 1024


CHECK: Final = 10.0  # seconds between looks at the CPU clock
# CPU seconds over one interval above which the process is busy (2 % of a CPU: about ten
# launches in ten seconds). At idle the daemon uses a tenth of that or less (its heartbeat,
# the kernel's audit events it watches for denials), which never counts as a burst.
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


@final
class TrimAfterBursts:
    """:class:`Burst` for a single-threaded loop with no timer of its own (the fork server):
    :meth:`tick` as often as it likes; every ``interval`` seconds it reads the process's
    CPU clock, and it trims once a burst is over."""

    def __init__(self, *, interval: float = CHECK, quiet: float = QUIET) -> None:
        self._interval = interval
        self._next = time.monotonic() + interval
        self._burst = Burst(time.process_time(), quiet=quiet)

    def tick(self) -> bool:
        """True when it trimmed (and glibc returned something)."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._interval
        return self._burst.over(time.process_time()) and trim()


def can_trim() -> bool:
    """Whether :func:`trim` does anything here (glibc)."""
    return _malloc_trim is not None


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Map buffers of ``size`` bytes and more on their own, always (no dynamic threshold)."""
    if _mallopt is None:
        return False
    return bool(_mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(size)))


def trim() -> bool:
    """Give every free page of every arena back to the system; True if any was. Takes the
    arenas' locks and walks their free lists: call it from a worker thread. A process whose
    memory is locked (``keep_out_of_swap``) is unlocked for the trim: the kernel discards no
    locked page."""
    if _malloc_trim is None:
        return False
    from .sandbox._libc import while_unlocked  # the fork server has it loaded already

    trim_all = _malloc_trim
    return bool(while_unlocked(lambda: trim_all(ctypes.c_size_t(0))))
