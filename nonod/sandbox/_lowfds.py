"""Descriptor numbers kept low in the fork server's table, for the descriptors a direct warm
init takes with it (``_forkserver._Warm._direct``).

A child made by ``clone`` gets a copy of its parent's descriptor table, a reference taken on
every open file, and the launcher then closes all but a handful of them (``_close_except``).
The fork server holds about five descriptors per live session (the guard hub's socket, pidfd,
state memfd and report pipe of each), so each warm init paid for thousands of them at a
thousand live sessions: 2 ms of CPU per launch at 900 (``perf``: ``close_range`` ->
``filp_close``, one cache miss after another), growing with every session alive.

So the server reserves a few numbers just above its own first descriptors when it starts
(placeholders: an ``O_PATH`` descriptor of ``/`` copied into each), below every session's
descriptor. For a direct init it copies what the child keeps into them (:meth:`LowSlots.lend`)
and clones with ``CLONE_FILES`` (the table shared, nothing copied, no reference taken); the
child's first act, before any of our code, is ``close_range(below, ~0U,
CLOSE_RANGE_UNSHARE)``, with which the kernel gives it a table of its own holding only the
descriptors below ``below`` (``_libc.fork_into``): the server's first few, which the
launcher closes as before, and the lent ones. The server does not touch the slots again
until the child said ``r`` (it has its own table by then) or has ended, then puts the
placeholders back (:meth:`LowSlots.lend`'s exit), which drops its copies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence

#: Enough for a direct init's socket, go socket, reaper memfd, hub socket and a few idmapped
#: trees; a launch that needs more is made the old way (the whole table copied).
SLOTS = 16


class LowSlots:
    """``count`` descriptor numbers reserved in this process's table, each holding a
    placeholder until lent. Made first thing in the fork server (the lowest free numbers
    then are below every descriptor a session will add)."""

    def __init__(self, count: int = SLOTS) -> None:
        self._placeholder = os.open("/", os.O_PATH | os.O_CLOEXEC)
        self.slots = tuple(fcntl.fcntl(self._placeholder, fcntl.F_DUPFD_CLOEXEC, 0)
                           for _ in range(count))

    @contextlib.contextmanager
    def lend(self, fds: Sequence[int]) -> Iterator[tuple[tuple[int, ...], int]]:
        """``fds`` copied into the lowest slots (each as inheritable as its original):
        yields their numbers there and ``below``, the number past the last slot used, for
        ``_libc.fork_into``; or ``((), 0)`` (lend nothing, copy the table) when there are
        more than the slots. The caller must leave the slots alone while a child that
        shares the table has not yet taken its own: the placeholders come back on exit."""
        if len(fds) > len(self.slots):
            yield (), 0
            return
        used = self.slots[:len(fds)]
        try:
            for fd, slot in zip(fds, used, strict=True):
                os.dup2(fd, slot, inheritable=os.get_inheritable(fd))
            yield used, (max(used) + 1 if used else 0)
        finally:
            for slot in used:
                os.dup2(self._placeholder, slot, inheritable=False)
