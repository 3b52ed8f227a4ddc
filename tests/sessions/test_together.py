"""The launch's preparation runs its jobs side by side with one task spawned, not one each
(``nonod.sessions._start._together``): the job that waits for a worker thread (the audit
file) in a task, the others in the launch's own task."""

from __future__ import annotations

import pytest
import trio

from nonod.errors import PolicyError
from nonod.sessions._start import _together


async def test_the_inline_jobs_run_in_the_callers_task_and_the_background_job_beside_them(
) -> None:
    caller = trio.lowlevel.current_task()
    ran_in: dict[str, trio.lowlevel.Task] = {}
    order: list[str] = []
    started = trio.Event()

    async def background() -> None:
        ran_in["background"] = trio.lowlevel.current_task()
        started.set()
        await trio.to_thread.run_sync(lambda: None)  # waits, as the audit file's thread does
        order.append("background")

    async def first() -> None:
        ran_in["first"] = trio.lowlevel.current_task()
        await started.wait()  # the background job started before this one went on
        order.append("first")

    async def second() -> None:
        ran_in["second"] = trio.lowlevel.current_task()
        order.append("second")

    await _together(background, first, second)

    assert ran_in["first"] is caller and ran_in["second"] is caller
    assert ran_in["background"] is not caller
    assert order.index("first") < order.index("second")
    assert sorted(order) == ["background", "first", "second"]


async def test_an_inline_failure_cancels_the_background_job_and_is_raised_as_itself() -> None:
    cancelled = trio.Event()
    ran: list[str] = []

    async def background() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async def refuses() -> None:
        await trio.lowlevel.checkpoint()
        raise PolicyError("refused by the services")

    async def never() -> None:
        ran.append("never")

    with pytest.raises(PolicyError, match="refused by the services"):
        await _together(background, refuses, never)
    assert cancelled.is_set()
    assert ran == []  # nothing after the failed inline job runs


async def test_a_background_failure_cancels_the_inline_job_waiting_and_is_raised_as_itself(
) -> None:
    cancelled = trio.Event()

    async def background() -> None:
        await trio.lowlevel.checkpoint()
        raise PolicyError("no audit file")

    async def waits() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with pytest.raises(PolicyError, match="no audit file"):
        await _together(background, waits)
    assert cancelled.is_set()
