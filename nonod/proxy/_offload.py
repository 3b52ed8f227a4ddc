"""Blocking work on a worker thread that the waiting trio task can stop at once.

A large response body is moved outside trio's event loop (see
:meth:`nonod.proxy._reverse.ReverseHandler._relay_sized_body`): the worker waits for its
sockets with ``poll(2)`` itself, and decrypting, reading and writing release the GIL, so the
event loop neither runs a pass per piece of the body nor is held up by it (other sessions'
requests go on meanwhile). The waiting task is woken once, when the work is done.

Every wait of the worker is on its socket *and* on the job's :class:`Stop` (an eventfd), and
between two waits the worker looks at the stop (:meth:`Stop.check`) after each piece: when
the waiting task is cancelled, the stop is set, the worker's wait returns at once (or its
next check fails) with :class:`Stopped`, and the task is woken only after the worker has let
go of every socket (then it sees its cancellation). Nothing else touches the job's sockets
while it runs.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import Final, TypeVar, final

import outcome
import trio

T = TypeVar("T")

_ERRORS: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL


class Stopped(Exception):
    """The waiting task was cancelled: the worker gives up at once."""


@final
class Seats:
    """At most ``count`` jobs at once in this process (each is a thread, with its buffers):
    :meth:`take` says whether one more may start now, without waiting (the caller does the
    work another way when it may not). Used from one trio thread only."""

    __slots__ = ("count", "taken")

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.count:
            return False
        self.taken += 1
        return True

    def give(self) -> None:
        self.taken -= 1


@final
class Stop:
    """One job's stop signal, and the worker's waits on its sockets."""

    __slots__ = ("_fd", "_set")

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        os.close(self._fd)

    def check(self) -> None:
        """Raise :class:`Stopped` once the stop is set (for work that may never wait)."""
        if self._set:
            raise Stopped

    def wait(self, fd: int, *, writable: bool, timeout: float) -> bool:
        """Wait until ``fd`` is readable (or writable), broken, or closed by its peer: True;
        False after ``timeout`` seconds (on the monotonic clock). Raises :class:`Stopped`
        once the stop is set."""
        poller = select.poll()
        poller.register(fd, (select.POLLOUT if writable else select.POLLIN) | _ERRORS)
        poller.register(self._fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready = poller.poll(left * 1000)
            if self._set or any(ready_fd == self._fd for ready_fd, _ in ready):
                raise Stopped
            if ready:
                return True


async def run_stoppable(work: Callable[[Stop], T]) -> T:
    """``work(stop)`` on a worker thread (trio's thread cache); its result, or its exception
    raised here. Cancelled, this sets the stop, waits for the worker to return (at its next
    wait), then raises ``Cancelled``."""
    await trio.lowlevel.checkpoint_if_cancelled()
    stop = Stop()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    result: list[outcome.Outcome[T]] = []

    def deliver(done: outcome.Outcome[T]) -> None:
        result.append(done)
        try:
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.Value(None))
        except trio.RunFinishedError:
            pass

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        stop.set()
        return trio.lowlevel.Abort.FAILED  # woken by deliver, once the worker has let go

    try:
        trio.lowlevel.start_thread_soon(lambda: work(stop), deliver,
                                        name="nonod-proxy-body")
        await trio.lowlevel.wait_task_rescheduled(abort)
    finally:
        stop.close()
    done = result[0]
    if isinstance(done, outcome.Error) and isinstance(done.error, Stopped):
        await trio.lowlevel.checkpoint_if_cancelled()
    return done.unwrap()
