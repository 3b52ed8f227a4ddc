"""The C allocator's settings that decide how much freed memory a long-lived process keeps.

Python hands blocks over 512 bytes, and its own 1 MiB arenas, to the C library's ``malloc``.
glibc keeps what is freed for reuse, and two of its habits make a process that has worked
stay larger than one that has not:

- a free at the top of the heap is returned only past a threshold, and a free anywhere
  else is never returned until ``malloc_trim``: :func:`trim` returns every free page of
  every arena (the main one, and those of threads, which outlive their threads);
- a large buffer freed raises the size above which buffers are mapped on their own (up to
  32 MiB), so that later buffers under it come from the heap and leave it fragmented:
  :func:`fix_mmap_threshold` keeps the threshold where it is.

Elsewhere (musl, macOS) these functions do nothing and return False. Imports only ctypes:
the fork server loads this module.
"""

from __future__ import annotations

import ctypes
from typing import Final

_libc = ctypes.CDLL(None)
_mallopt = getattr(_libc, "mallopt", None)
_malloc_trim = getattr(_libc, "malloc_trim", None)

# glibc's <malloc.h>
M_MMAP_THRESHOLD: Final = -3

#: Buffers of this size and more are mapped on their own and unmapped when freed (glibc's
#: starting value, pinned).
MMAP_THRESHOLD: Final = 128 * 1024


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
