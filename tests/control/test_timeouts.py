"""The control connections' timeouts (``nonod/control/_timeouts.py``), on trio's autojump
clock: each wait is cancelled at its own deadline, the earliest first whatever order they
began in, and a wait that ended is forgotten."""

from __future__ import annotations

import trio
import trio.testing

from nonod.control._timeouts import Timeouts


async def test_each_wait_ends_at_its_deadline_the_shorter_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeouts = Timeouts()
    ended: dict[str, float] = {}

    async def wait(name: str, timeout: float) -> None:
        with timeouts.waiting(timeout) as scope:
            await trio.sleep_forever()
        assert scope.cancelled_caught
        ended[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeouts.run)
        began = trio.current_time()
        async with trio.open_nursery() as waits:
            waits.start_soon(wait, "idle", 600.0)
            await trio.sleep(1)
            # Shorter than the one the watcher sleeps until: it is woken for it.
            waits.start_soon(wait, "send", 30.0)
        nursery.cancel_scope.cancel()
    assert ended == {"send": began + 31.0, "idle": began + 600.0}
    assert len(timeouts) == 0


async def test_a_wait_that_ended_is_not_cancelled_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeouts = Timeouts()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timeouts.run)
        with timeouts.waiting(5.0) as first:
            await trio.sleep(1)
        assert len(timeouts) == 0
        with timeouts.waiting(10.0) as second:
            await trio.sleep(7)  # past the first one's deadline
        nursery.cancel_scope.cancel()
    assert not first.cancel_called and not second.cancel_called
