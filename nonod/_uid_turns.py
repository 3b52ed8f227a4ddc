"""Turns per uid on the system daemon: :class:`UidTurns`.

The daemon's users share its one event loop, its worker threads and the queues behind them
(the fork server, the ledger, the kernel audit socket). Work that one user can start in any
amount at once (launches, sessions ending together) takes one of its uid's few turns first: a
uid's further work waits for its own turns, first come first served, never for another uid's,
so another user's work has at most that many of each other user's ahead of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import trio


@final
class UidTurns:
    """At most ``per_uid`` blocks at once per uid (see the module)."""

    def __init__(self, per_uid: int) -> None:
        self._per_uid = per_uid
        self._turns: dict[int, trio.Semaphore] = {}
        self._waiting: Counter[int] = Counter()

    @asynccontextmanager
    async def turn(self, uid: int) -> AsyncIterator[None]:
        """Hold one of ``uid``'s turns while the block runs (waiting for one first)."""
        turns = self._turns.get(uid)
        if turns is None:
            turns = self._turns[uid] = trio.Semaphore(self._per_uid)
        self._waiting[uid] += 1
        try:
            async with turns:
                yield
        finally:
            self._waiting[uid] -= 1
            if not self._waiting[uid]:
                del self._waiting[uid], self._turns[uid]
