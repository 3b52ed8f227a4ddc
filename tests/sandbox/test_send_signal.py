"""``Sandboxed.send_signal`` says whether the kernel took the signal: once the program (and
so its init) has ended, nothing is sent, and the daemon must not record a signal as sent."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

from ..proctree import wait_until

pytestmark = pytest.mark.userns

POLICY = ResolvedPolicy(name="signals", grants=(Grant(path="/usr", access=Access.READ),),
                        denials=())


async def test_a_signal_to_a_running_program_is_taken_and_to_an_ended_one_is_not() -> None:
    async with open_launcher("namespaces") as launcher:
        proc = await launcher.launch(POLICY, LaunchRequest(argv=("/usr/bin/sleep", "60"),
                                                           cwd="/"), stdio=(0, 1, 2))
        assert proc.send_signal(signal.SIGTERM) is True
        with trio.fail_after(30):
            assert (await proc.wait_exited()).signal == signal.SIGTERM

        proc = await launcher.launch(POLICY, LaunchRequest(argv=("/usr/bin/true",), cwd="/"),
                                     stdio=(0, 1, 2))
        await trio.to_thread.run_sync(  # its init gone, its status not read yet
            lambda: wait_until("the init gone", lambda: not os.path.exists(f"/proc/{proc.pid}")))
        assert proc.send_signal(signal.SIGTERM) is False
        with trio.fail_after(30):
            assert (await proc.wait_exited()).code == 0
        assert proc.send_signal(signal.SIGTERM) is False
