"""Blocking work started in a worker thread at once, awaited later: :class:`Started`.

``trio.to_thread.run_sync`` hands the work over when it is awaited, and the awaiting task
waits there. A launch has work of its own to do while a file is synced or written (build the
plan, append the next audit record): ``Started(fn)`` hands ``fn`` to a worker thread before
its caller's next line runs, and ``await started.result()`` gives what it returned or raises
what it raised, as often as asked. The wait is shielded: whatever the caller's state, the
work has run to its end (a descriptor it uses stays valid until then).

The threads count against trio's default thread limiter, as ``to_thread.run_sync``'s do:
when it is full, the work starts when it is first awaited instead (after a token is free).

:meth:`Started.pair`: two works in two threads, with one thread woken from the event loop
(the first's thread starts the second's). Waking a worker costs the loop more than the work
it hands over on a busy host: it holds the GIL while the kernel switches to the woken
thread, which finds the GIL taken and switches back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

import outcome
import trio

T = TypeVar("T")
U = TypeVar("U")


@final
class Started(Generic[T]):
    """``fn()`` running in a worker thread from construction on (from the event loop), or
    from the first wait when trio's default thread limiter has no token free."""

    def __init__(self, fn: Callable[[], T], *, name: str = "nonod worker",
                 start: bool = True) -> None:
        self._fn = fn
        self._name = name
        self._limiter = trio.to_thread.current_default_thread_limiter()
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None
        self._running = False
        #: Holds a thread token, not started yet (``start=False``: ``pair`` starts it).
        self._held = False
        try:
            self._limiter.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            return  # as many worker threads as trio allows are busy: at the first wait
        self._held = True
        if start:
            self._start()

    @staticmethod
    def pair(first: Callable[[], T], second: Callable[[], U], *,
             names: tuple[str, str] = ("nonod worker", "nonod worker")
             ) -> tuple[Started[T], Started[U]]:
        """``first`` and ``second``, each in a worker thread of its own from now on, as two
        ``Started`` would run them, but with one thread woken from the event loop: the
        first's thread starts the second's, then runs ``first``. (Without a thread token for
        both, each that has one starts as it would alone.)"""
        one = Started(first, name=names[0], start=False)
        two = Started(second, name=names[1], start=False)
        if not (one._held and two._held):
            for each in (one, two):
                if each._held:
                    each._start()
            return one, two
        fn2, deliver2 = two._job()
        fn1, deliver1 = one._job()

        def both() -> T:  # in the first's worker thread
            try:
                trio.lowlevel.start_thread_soon(fn2, deliver2, name=names[1])
            except BaseException as exc:  # noqa: BLE001 - no thread: the second's wait raises it
                deliver2(outcome.Error(exc))
            return fn1()

        trio.lowlevel.start_thread_soon(both, deliver1, name=names[0])
        return one, two

    def _job(self) -> tuple[Callable[[], T], Callable[[outcome.Outcome[T]], Any]]:
        """What its worker thread runs, and how that delivers (on the event loop: this takes
        the loop's token); it counts as running from now on."""
        token = trio.lowlevel.current_trio_token()

        def finished() -> None:  # back on the event loop
            self._limiter.release_on_behalf_of(self)
            self._done.set()

        def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
            self._result = result
            token.run_sync_soon(finished)

        self._running = True
        self._held = False
        return self._fn, deliver

    def _start(self) -> None:
        fn, deliver = self._job()
        trio.lowlevel.start_thread_soon(fn, deliver, name=self._name)

    @property
    def started(self) -> bool:
        """Its worker thread was started (at construction, or by a first wait); False while
        the work waits for a token of trio's default thread limiter, which only a wait asks
        for again (nothing starts it otherwise)."""
        return self._running

    def finished(self) -> outcome.Outcome[T] | None:
        """What ``fn`` returned or raised once its thread delivered it to the event loop;
        None before (never waits)."""
        return self._result if self._done.is_set() else None

    async def result(self) -> T:
        """What ``fn`` returned (it raised: that, again at each call)."""
        with trio.CancelScope(shield=True):
            if not self._running:
                if not self._held:
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
