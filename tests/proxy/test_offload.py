"""run_stoppable(): blocking work on a worker thread, its result or error handed back, and a
cancelled task that goes on only once the worker has let go of its sockets."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import trio

from nonod.proxy._offload import Stop, Stopped, run_stoppable


async def test_the_result_and_the_error_of_the_work_come_back() -> None:
    caller = threading.get_ident()
    assert await run_stoppable(lambda stop: threading.get_ident()) != caller

    def fails(stop: Stop) -> None:
        raise LookupError("from the worker")

    with pytest.raises(LookupError, match="from the worker"):
        await run_stoppable(fails)


async def test_a_cancelled_task_goes_on_only_after_the_worker_let_go() -> None:
    quiet, other = socket.socketpair()  # nothing is ever written: the worker waits
    started = threading.Event()
    let_go: list[bool] = []

    def waits(stop: Stop) -> None:
        started.set()
        try:
            stop.wait(quiet.fileno(), writable=False, timeout=60)
        finally:
            let_go.append(True)

    with quiet, other:
        begun = time.monotonic()
        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_stoppable, waits)
                await trio.to_thread.run_sync(started.wait)
                nursery.cancel_scope.cancel()
            assert let_go == [True]  # the worker returned before the task saw its cancel
        assert not scope.cancelled_caught
        assert time.monotonic() - begun < 5  # at once, not after the wait's 60 seconds


def test_a_wait_ends_on_readiness_on_timeout_and_on_stop() -> None:
    one, two = socket.socketpair()
    stop = Stop()
    try:
        assert not stop.wait(one.fileno(), writable=False, timeout=0.05)  # nothing arrived
        assert stop.wait(one.fileno(), writable=True, timeout=5)  # room to write
        two.send(b"x")
        assert stop.wait(one.fileno(), writable=False, timeout=5)
        one.recv(1)
        two.close()
        assert stop.wait(one.fileno(), writable=False, timeout=5)  # the peer went away
        stop.set()
        with pytest.raises(Stopped):
            stop.wait(one.fileno(), writable=True, timeout=5)
    finally:
        stop.close()
        one.close()
