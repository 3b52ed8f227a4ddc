"""The control connections' timeouts (``idle_timeout``, ``send_timeout``): one watcher for all.

A connection waiting for its next request for ``idle_timeout`` is closed, and one that does not
take a reply within ``send_timeout`` is dropped (``_conversation``). Each wait was a
``trio.move_on_after``: a cancel scope with a deadline, which trio keeps in its deadline heap
until the deadline passes (ten minutes for the idle one) even after the wait ended and the
scope exited, unless more than a thousand such stale entries pile up: two per request, and
hundreds of them (a scope, a tuple, a float and an int each) in the idle daemon for ten
minutes after a burst (docs/benchmarks.md, "idle6": they were not, alone, what keeps its
memory after the burst).

Here each wait is a cancel scope without a deadline, listed with its deadline in
:class:`Timeouts`; one task sleeps until the earliest deadline listed and cancels the waits
whose deadline has passed. A wait that ends is unlisted: nothing is armed per wait, and
nothing is left behind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import final

import trio


@final
class Timeouts:
    """Waits, each with its deadline; :meth:`run` cancels the overdue ones."""

    def __init__(self) -> None:
        self._waits: dict[trio.CancelScope, float] = {}
        self._armed = math.inf  # the deadline run() sleeps until
        self._wake = trio.Event()

    @contextmanager
    def waiting(self, timeout: float) -> Iterator[trio.CancelScope]:
        """A cancel scope for one wait, cancelled ``timeout`` seconds from now if the wait
        has not ended by then (its ``cancelled_caught`` says so afterwards), as
        ``trio.move_on_after(timeout)`` would be."""
        scope = trio.CancelScope()
        deadline = trio.current_time() + timeout
        self._waits[scope] = deadline
        if deadline < self._armed:  # the first wait, or one shorter than those listed
            self._wake.set()
        try:
            with scope:
                yield scope
        finally:
            del self._waits[scope]

    def __len__(self) -> int:
        """Waits listed: under way (or cancelled and not yet ended)."""
        return len(self._waits)

    async def run(self) -> None:
        """Cancel each wait at its deadline, until cancelled."""
        while True:
            now = trio.current_time()
            self._armed = math.inf
            for scope, deadline in self._waits.items():
                if deadline <= now:
                    scope.cancel()
                elif not scope.cancel_called:
                    self._armed = min(self._armed, deadline)
            self._wake = trio.Event()
            # No deadline while nothing is listed; woken early only by a wait that ends
            # before the one armed.
            with trio.move_on_at(self._armed):
                await self._wake.wait()
