"""``nonod._soon.Started``: blocking work handed to a worker thread at once, awaited later
(the launch's audit gate and the session record use it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from nonod._soon import Started


async def test_the_work_runs_before_anyone_awaits_it_and_its_result_stays() -> None:
    running, release = threading.Event(), threading.Event()

    def work() -> int:
        running.set()
        release.wait(10)
        return 7

    started = Started(work)
    # Nobody awaits it yet: the thread runs all the same (watched from another thread).
    assert await trio.to_thread.run_sync(running.wait, 10)
    release.set()
    assert await started.result() == 7
    assert await started.result() == 7  # as often as asked


async def test_what_the_work_raised_is_raised_at_each_wait() -> None:
    def fail() -> None:
        raise OSError(5, "Input/output error")

    started = Started(fail)
    for _ in range(2):
        with pytest.raises(OSError, match="Input/output"):
            await started.result()


async def test_a_cancelled_wait_still_lasts_until_the_work_has_ended() -> None:
    release = threading.Event()
    ended: list[int] = []

    def work() -> int:
        release.wait(10)
        ended.append(1)
        return 1

    started = Started(work)
    seen: list[int] = []

    async def waiter() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            seen.append(await started.result())  # shielded: not cut short
            await trio.lowlevel.checkpoint()
            seen.append(2)  # never: the cancellation comes at the next checkpoint

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []  # still waiting, though cancelled
        release.set()
    assert seen == [1] and ended == [1]


async def test_with_no_thread_token_free_the_work_starts_at_the_first_wait() -> None:
    # Like trio.to_thread.run_sync's, these threads count against trio's default limiter.
    limiter = trio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = 1
    holder = object()
    await limiter.acquire_on_behalf_of(holder)
    ran: list[int] = []

    def work() -> int:
        ran.append(1)
        return 2

    started = Started(work)
    got: list[object] = []

    async def waiter() -> None:
        got.append(await started.result())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert ran == [] and got == []  # no token: not started, the wait waits for one
        limiter.release_on_behalf_of(holder)
    assert ran == [1] and got == [2]
    assert limiter.borrowed_tokens == 0  # given back once the work ended


async def test_a_pair_runs_at_once_side_by_side_with_one_thread_woken_by_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Started.pair``: both works run at the same time (each waits for the other to have
    begun), neither awaited yet, and the event loop hands over one of them: the first's
    thread starts the second's."""
    from nonod import _soon

    loop = threading.get_ident()
    from_loop: list[str | None] = []
    start_thread = trio.lowlevel.start_thread_soon

    def seen(fn: Any, deliver: Any, name: str | None = None) -> None:
        if threading.get_ident() == loop:
            from_loop.append(name)
        start_thread(fn, deliver, name=name)

    monkeypatch.setattr(_soon.trio.lowlevel, "start_thread_soon", seen)
    began = {"first": threading.Event(), "second": threading.Event()}

    def work(me: str, other: str) -> str:
        began[me].set()
        assert began[other].wait(10)  # side by side, not one after the other
        return me

    one, two = Started.pair(lambda: work("first", "second"), lambda: work("second", "first"),
                            names=("one", "two"))
    assert await trio.to_thread.run_sync(began["second"].wait, 10)  # before any wait
    assert await one.result() == "first" and await two.result() == "second"
    assert from_loop == ["one"]
    limiter = trio.to_thread.current_default_thread_limiter()
    assert limiter.borrowed_tokens == 0
