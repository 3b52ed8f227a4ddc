"""``_callerfs.in_thread_then``: a worker thread that answers, then goes on (a kept profile
resolution's check after the resolution). The answer comes back before the rest is done;
the thread keeps its place among the caller's threads until the rest returns, whoever waits
for it or not, so a rest stuck in a caller's file system counts against that caller's bound as
any other read of theirs does."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import trio

from nonod import _callerfs
from nonod._callerfs import FileTimeout, GoesOn, in_thread_then


class _Places:
    """A caller's thread places (``trio.CapacityLimiter``'s interface, as ``_Threads``), that
    says when the last one came back."""

    def __init__(self) -> None:
        self._limiter = trio.CapacityLimiter(4)
        self.empty = trio.Event()

    @property
    def total_tokens(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def borrowed_tokens(self) -> int:
        return int(self._limiter.borrowed_tokens)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        self.empty = trio.Event()
        await self._limiter.acquire_on_behalf_of(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        self._limiter.release_on_behalf_of(borrower)
        if not self._limiter.borrowed_tokens:
            self.empty.set()


@pytest.fixture
def places(monkeypatch: pytest.MonkeyPatch) -> _Places:
    made = _Places()
    monkeypatch.setattr(_callerfs, "_limiter", lambda uid: made)
    return made


def _then(answer: str, rest: Callable[[], int]) -> Callable[[], tuple[str, Callable[[], int]]]:
    return lambda: (answer, rest)


def test_the_answer_comes_before_the_rest_which_keeps_the_threads_place(
        places: _Places) -> None:
    go = threading.Event()

    def rest() -> int:
        assert go.wait(30)
        return 7

    async def main() -> None:
        answer, later = await in_thread_then(None, _then("resolved", rest))
        assert answer == "resolved" and later is not None
        assert not later.done() and places.borrowed_tokens == 1  # still checking
        go.set()
        assert await later.wait() == 7
        assert places.borrowed_tokens == 0

    trio.run(main)


def test_a_rest_done_before_anyone_waits_is_taken_then(places: _Places) -> None:
    finished = threading.Event()

    def rest() -> int:
        finished.set()
        return 3

    async def main() -> None:
        _, later = await in_thread_then(None, _then("x", rest))
        assert later is not None
        await trio.to_thread.run_sync(finished.wait)
        # Its place goes back as the rest returns, before anyone waits: held until the
        # wait (the gate's, after the plan), a caller with as many launches in flight as
        # places had none left for its plans' threads (a fleet's launches each waited out
        # the plan's 30 s).
        with trio.fail_after(5):
            while places.borrowed_tokens:
                await trio.sleep(0.001)
        assert await later.wait() == 3
        assert places.borrowed_tokens == 0

    trio.run(main)


def test_what_the_rest_raises_is_raised_by_wait(places: _Places) -> None:
    def rest() -> int:
        raise OSError(5, "I/O error")

    async def main() -> None:
        _, later = await in_thread_then(None, _then("x", rest))
        assert later is not None
        with pytest.raises(OSError, match="I/O error"):
            await later.wait()
        assert places.borrowed_tokens == 0

    trio.run(main)


def test_no_rest_is_no_goes_on_and_the_place_goes_back_with_the_answer(
        places: _Places) -> None:
    async def main() -> None:
        answer, later = await in_thread_then(None, lambda: ("only", None))
        assert answer == "only" and later is None
        assert places.borrowed_tokens == 0

    trio.run(main)


def test_a_closed_rest_gives_its_place_back_once_it_returns(places: _Places) -> None:
    go = threading.Event()

    def rest() -> int:
        assert go.wait(30)
        return 1

    async def main() -> None:
        _, later = await in_thread_then(None, _then("x", rest))
        assert later is not None
        later.close()  # the launch failed before its gate: nobody waits
        assert places.borrowed_tokens == 1  # a rest still running keeps its place
        go.set()
        with trio.fail_after(30):
            await places.empty.wait()

    trio.run(main)


def test_a_rest_stuck_past_the_wait_is_refused_and_keeps_its_place(places: _Places) -> None:
    go = threading.Event()

    def rest() -> int:
        assert go.wait(30)
        return 1

    async def main() -> None:
        _, later = await in_thread_then(None, _then("x", rest), what="the profile")
        assert later is not None
        with pytest.raises(FileTimeout, match=r"not checked within 0\.05 s"):
            await later.wait(timeout=0.05)
        assert places.borrowed_tokens == 1  # a hung file system: the caller's thread, held
        go.set()
        with trio.fail_after(30):
            await places.empty.wait()

    trio.run(main)


def test_cancelled_before_the_answer_the_rest_is_never_run(places: _Places) -> None:
    go, ran = threading.Event(), threading.Event()

    def first() -> tuple[str, Callable[[], int]]:
        assert go.wait(30)

        def rest() -> int:
            ran.set()
            return 1
        return "late", rest

    async def main() -> None:
        with trio.move_on_after(0.05):
            await in_thread_then(None, first)
        assert places.borrowed_tokens == 1
        go.set()
        with trio.fail_after(30):
            await places.empty.wait()
        assert not ran.is_set()

    trio.run(main)


def test_wait_is_once(places: _Places) -> None:
    async def main() -> None:
        _, later = await in_thread_then(None, _then("x", lambda: 2))
        assert isinstance(later, GoesOn)
        assert await later.wait() == 2
        with pytest.raises(RuntimeError, match="once"):
            await later.wait()

    trio.run(main)


def test_as_many_finished_rests_as_places_leave_the_caller_a_place(places: _Places) -> None:
    """Four launches in flight of one caller (its bound: 4), each with its check done and
    not yet waited for at its gate: the caller's next thread (its plan's) still runs."""

    async def main() -> None:
        pending = [(await in_thread_then(None, _then("x", lambda: 1)))[1] for _ in range(4)]
        with trio.fail_after(5):  # before: no place came back until a gate's wait
            assert await _callerfs.in_thread_of(None, lambda: "plan") == "plan"
        for later in pending:
            assert later is not None and await later.wait() == 1

    trio.run(main)
