"""Every live session's OOM watch in one task: :class:`OomWatches`.

cgroup v1 kills one process at an OOM, not the session: the daemon ends the session at its
first OOM kill. The kernel signals an eventfd registered on the group's
``memory.oom_control`` (``SessionGroup.oom_eventfd``). Each session used to wait on its own
eventfd in a task of its own, which did nothing else: a task spawned, stepped, cancelled and
unwound per session. Here the eventfds of all live sessions are in one epoll set, which one
task waits on (trio sees one descriptor); a signal spawns a task for that session only, which
confirms the kill (the kernel signals when the OOM starts, before its killer has chosen and
counted; a removed group signals too) and then stops the session.

The task runs in the registry's nursery while some group is watched, and for :data:`LINGER`
seconds after the last watch ended (a daemon launching one session after another does not
spawn it again for each), then ends by itself; :meth:`OomWatches.close` ends it at once.
"""

from __future__ import annotations

import math
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import trio

from ..cgroups import SessionGroup

#: How long after the kernel's signal the kill may take to show in the group's counter.
OOM_SETTLE: Final = 1.0
#: How long the task waits for a new watch once none is left, before it ends.
LINGER: Final = 2.0


@final
@dataclass(slots=True, eq=False)
class _Watch:
    """One session's group: its eventfd, and what to call at its first OOM kill."""

    efd: int
    group: SessionGroup
    on_oom: Callable[[], None]
    settling: bool = False  # a signal came: its kill is being confirmed (``_settle``)
    fired: bool = False


@final
class OomWatches:
    """The OOM watches of every live session (see the module doc)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._epoll: select.epoll | None = None
        self._watches: dict[int, _Watch] = {}
        self._running = False
        #: The task's wait on the epoll set: its deadline is the linger's end once nothing
        #: is watched (moved, not cancelled: a watch coming and going wakes no task).
        self._wait: trio.CancelScope | None = None
        self._closed = False
        #: Ended watches' eventfds, not closed yet (:meth:`closing`).
        self._unclosed: list[int] = []

    def watch(self, group: SessionGroup, on_oom: Callable[[], None]
              ) -> Callable[[], None] | None:
        """Watch ``group``: ``on_oom`` is called (on the event loop, once) at its first OOM
        kill, or at once when one is counted already. Returns the end of the watch (call it
        before the group is removed); None when the group has no OOM signal (cgroup v2,
        which kills the whole group itself; no memory hierarchy)."""
        if self._closed:
            return None
        efd = group.oom_eventfd()
        if efd is None:
            return None
        watch = _Watch(efd, group, on_oom)
        try:
            if self._epoll is None:
                self._epoll = select.epoll()
            self._epoll.register(efd, select.EPOLLIN)
        except BaseException:
            os.close(efd)
            raise
        self._watches[efd] = watch
        if self._wait is not None:
            self._wait.deadline = math.inf
        if not self._running:
            self._running = True
            self._nursery.start_soon(self._run, name="nonod oom watch")
        # An OOM kill before the eventfd was registered is in the counter already.
        if group.oom_kills():
            self._fire(watch)

        def end() -> None:
            self._end(watch)

        return end

    def closing(self) -> list[int]:
        """The eventfds of the watches ended since the last call, for the caller to close:
        a cgroup v1 OOM eventfd's close takes the kernel from 0.05 to over 1 ms, which the
        end of a watch (on a session's end's path) leaves to the group removal's worker
        thread (``_removals``)."""
        unclosed, self._unclosed = self._unclosed, []
        return unclosed

    def close(self) -> None:
        """End every watch, and the task (the daemon is stopping)."""
        self._closed = True
        for watch in list(self._watches.values()):
            self._end(watch)
        for efd in self.closing():
            os.close(efd)
        if self._wait is not None:
            self._wait.cancel()
        elif not self._running and self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def _end(self, watch: _Watch) -> None:
        if self._watches.pop(watch.efd, None) is None:
            return
        if self._epoll is not None:
            self._epoll.unregister(watch.efd)
        self._unclosed.append(watch.efd)
        if not self._watches and self._wait is not None:
            self._wait.deadline = trio.current_time() + LINGER

    def _fire(self, watch: _Watch) -> None:
        if watch.fired:
            return
        watch.fired = True
        self._end(watch)  # once: nothing more to watch in that group
        watch.on_oom()

    async def _run(self) -> None:
        try:
            while self._epoll is not None and not self._closed:
                deadline = math.inf if self._watches else trio.current_time() + LINGER
                with trio.CancelScope(deadline=deadline) as wait:
                    self._wait = wait
                    await trio.lowlevel.wait_readable(self._epoll.fileno())
                self._wait = None
                if wait.cancelled_caught:
                    if self._closed or not self._watches:
                        return  # closed, or nothing watched for LINGER seconds
                    continue
                self._signalled(self._epoll)
        finally:
            self._wait = None
            self._running = False
            if self._closed and self._epoll is not None:
                self._epoll.close()
                self._epoll = None

    def _signalled(self, epoll: select.epoll) -> None:
        for efd, _ in epoll.poll(0):
            watch = self._watches.get(efd)
            if watch is None:
                continue
            try:
                os.eventfd_read(efd)
            except BlockingIOError:
                continue
            if not watch.settling:
                watch.settling = True
                self._nursery.start_soon(self._settle, watch)

    def _watched(self, watch: _Watch) -> bool:
        return self._watches.get(watch.efd) is watch  # its number may be another's later

    async def _settle(self, watch: _Watch) -> None:
        """The kernel signalled: wait (bounded) for the kill to be counted."""
        try:
            with trio.move_on_after(OOM_SETTLE):
                while self._watched(watch) and not watch.group.oom_kills():
                    await trio.sleep(0.005)
            if self._watched(watch) and watch.group.oom_kills():
                self._fire(watch)
        finally:
            watch.settling = False
