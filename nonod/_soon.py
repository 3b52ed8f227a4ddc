"""Blocking work started in a worker thread at once, awaited later: :class:`Started`.

``trio.to_thread.run_sync`` hands the work over when it is awaited, and the awaiting task
waits there. A launch has work of its own to do while a file is synced or written (build the
plan, append the next audit record): ``Started(fn)`` hands ``fn`` to a worker thread before
its caller's next line runs, and ``await started.result()`` gives what it returned or raises
what it raised, as often as asked. The wait is shielded: whatever the caller's state, the
work has run to its end (a descriptor it uses stays valid until then).

The threads count against trio's default thread limiter, as ``to_thread.run_sync``'s do:
when it is full, the work starts when it is first awaited instead (after a token is free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, final

import outcome
import trio

T = TypeVar("T")


@final
class Started(Generic[T]):
    """``fn()`` running in a worker thread from construction on (from the event loop), or
    from the first wait when trio's default thread limiter has no token free."""

    def __init__(self, fn: Callable[[], T], *, name: str = "nonod worker") -> None:
        self._fn = fn
        self._name = name
        self._limiter = trio.to_thread.current_default_thread_limiter()
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None
        self._running = False
        try:
            self._limiter.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            return  # as many worker threads as trio allows are busy: at the first wait
        self._start()

    def _start(self) -> None:
        token = trio.lowlevel.current_trio_token()

        def finished() -> None:  # back on the event loop
            self._limiter.release_on_behalf_of(self)
            self._done.set()

        def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
            self._result = result
            token.run_sync_soon(finished)

        self._running = True
        trio.lowlevel.start_thread_soon(self._fn, deliver, name=self._name)

    async def result(self) -> T:
        """What ``fn`` returned (it raised: that, again at each call)."""
        with trio.CancelScope(shield=True):
            if not self._running:
                await self._limiter.acquire_on_behalf_of(self)
                self._start()
            await self._done.wait()
        result = self._result
        if isinstance(result, outcome.Value):
            value: T = result.value
            return value
        if isinstance(result, outcome.Error):
            raise result.error
        raise RuntimeError("the worker thread delivered nothing")
