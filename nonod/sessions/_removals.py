"""Ended sessions' cgroups, removed in batches, off every launch's path.

Removing a v1 group takes milliseconds of kernel time, so it runs in a worker thread; a
worker job per ended session costs the event loop a hand-off each (the loop wakes the
thread while it holds the GIL: about 0.1 ms of CPU, and a context switch that delays
whatever the loop does next, most often the next launch of a client that launches back to
back). Here the groups of the sessions that ended within :data:`BATCH_DELAY` of each other
are removed by one job. The delay also gives the launcher's outer process, which leaves the
group a few milliseconds after the program, time to leave: the first try finds the group
empty more often.

Each group is first only removed if empty (nothing listed, nothing killed); a group still
busy is tried again in the next batch, then with what is left in it killed, as
``_limits.remove_group`` does, for at most ``REMOVE_TIMEOUT`` seconds. Groups are removed in
the order their sessions ended (a tool session's group, nested in its agent's, ends first).
What is left at the daemon's exit is removed by ``SessionCgroups.close``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final, NamedTuple, final

import structlog
import trio

from ..cgroups import SessionGroup
from ._limits import REMOVE_TIMEOUT

log = structlog.get_logger()

#: How long after the first ended session's group was queued its batch is removed (seconds):
#: a client launching back to back ends a session every ~17 ms on a quiet 2-CPU host, a
#: fleet several at once. Left that long, a group costs only its directories: its session's
#: processes have ended (the outer launcher's leaves within milliseconds).
BATCH_DELAY: Final = 0.1


class _Queued(NamedTuple):
    group: SessionGroup
    deadline: float  # trio time past which it is given up on
    kill: bool  # tried once already: kill what is left in it
    close: tuple[int, ...] = ()  # descriptors to close first (its ended OOM watch's)


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _remove_all(batch: list[_Queued], left: list[_Queued]) -> None:
    """Blocking: try each group once, in order; those still there go to ``left``."""
    for queued in batch:
        _close_all(queued.close)
        if not queued.group.remove(kill=queued.kill):
            left.append(queued._replace(kill=True, close=()))


@final
class GroupRemovals:
    """The ended sessions' groups waiting to be removed, and the task that removes them
    (started in ``nursery`` at the first group queued)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._queued: list[_Queued] = []
        self._wake = trio.Event()
        self._running = False
        self._removing = False
        self._batch_done = trio.Event()

    def add(self, group: SessionGroup, *, close: tuple[int, ...] = ()) -> None:
        """Queue ``group`` (its session has ended, its usage read) for removal, and ``close``
        (descriptors: an ended OOM watch's eventfd) to be closed before it, in the same
        worker thread. Raises RuntimeError, queueing nothing, when the task is not running
        and ``nursery`` is closed (the daemon is going)."""
        if not self._running:
            self._nursery.start_soon(self._run, name="nonod cgroup removals")
            self._running = True
        self._queued.append(_Queued(group, trio.current_time() + REMOVE_TIMEOUT, False,
                                    close))
        self._wake.set()

    def pending(self) -> int:
        """Groups queued, not yet removed (those in the batch under way included)."""
        return len(self._queued) + (1 if self._removing else 0)

    async def drained(self) -> None:
        """Wait until every group queued so far is removed or given up on."""
        while self._queued or self._removing:
            await self._batch_done.wait()

    def give_up(self) -> None:
        """Blocking, at the daemon's exit: one last try at each group still queued, its
        processes killed; its control files are closed whether or not it goes."""
        batch, self._queued = self._queued, []
        for queued in batch:
            _close_all(queued.close)
            queued.group.remove(kill=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await trio.sleep(BATCH_DELAY)
            self._wake = trio.Event()
            batch, self._queued = self._queued, []
            self._removing = True
            left: list[_Queued] = []
            try:
                await trio.to_thread.run_sync(_remove_all, batch, left)
            except trio.Cancelled:
                # The daemon is going: the thread has finished the batch (a worker thread is
                # waited for), and what it left goes back for ``give_up`` to remove and close.
                self._queued[:0] = left
                raise
            finally:
                self._removing = False
            now = trio.current_time()
            for queued in left:
                if queued.deadline <= now:
                    log.warning("a session's cgroup could not be removed; the next daemon "
                                "start removes it", path=queued.group.path)
            # Before those queued meanwhile: the order sessions ended in stays.
            self._queued[:0] = [queued for queued in left if queued.deadline > now]
            if self._queued:
                self._wake.set()
            self._batch_done.set()
            self._batch_done = trio.Event()
            del batch, left  # while it waits for the next: nothing of the groups gone kept
