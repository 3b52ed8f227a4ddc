"""Blocking work started in a worker thread at once, awaited later: :class:`Started`.

``trio.to_thread.run_sync`` hands the work over when it is awaited, and the awaiting task
waits there. A launch has work of its own to do while a file is synced or written (build the
plan, append the next audit record): ``Started(fn)`` hands ``fn`` to a worker thread before
its caller's next line runs, and ``await started.result()`` gives what it returned or raises
what it raised, as often as asked. The wait is shielded: whatever the caller's state, the
work has run to its end (a descriptor it uses stays valid until then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, final

import outcome
import trio

T = TypeVar("T")


@final
class Started(Generic[T]):
    """``fn()`` running in a worker thread from construction on (from the event loop)."""

    def __init__(self, fn: Callable[[], T], *, name: str = "nonod worker") -> None:
        token = trio.lowlevel.current_trio_token()
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None

        def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
            self._result = result
            token.run_sync_soon(self._done.set)

        trio.lowlevel.start_thread_soon(fn, deliver, name=name)

    async def result(self) -> T:
        """What ``fn`` returned (it raised: that, again at each call)."""
        with trio.CancelScope(shield=True):
            await self._done.wait()
        result = self._result
        if isinstance(result, outcome.Value):
            value: T = result.value
            return value
        if isinstance(result, outcome.Error):
            raise result.error
        raise RuntimeError("the worker thread delivered nothing")
