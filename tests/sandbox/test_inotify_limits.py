"""A session's user namespace has its own inotify limits (``_launcher.SESSION_INOTIFY_LIMITS``)
whichever way it was launched: cold, on a plain warm launcher, on one with the view built.
The init writes them through its own fresh ``/proc`` (``limit_inotify``); read here from
inside the session, as the kernel holds them."""

from __future__ import annotations

import os

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._launcher import SESSION_INOTIFY_LIMITS

pytestmark = pytest.mark.userns

READ = ("/usr/bin/cat", *(f"/proc/sys/user/{name}" for name, _ in SESSION_INOTIFY_LIMITS))


async def test_every_launch_has_the_sessions_inotify_limits() -> None:
    policy = ResolvedPolicy(name="limits", grants=(Grant(path="/usr", access=Access.READ),),
                            denials=())
    expected = [str(limit) for _, limit in SESSION_INOTIFY_LIMITS]
    async with open_launcher("namespaces") as launcher:
        for _ in range(4):  # the first cold, the next on launchers made meanwhile
            r, w = os.pipe()
            try:
                proc = await launcher.launch(policy, LaunchRequest(argv=READ, cwd="/"),
                                             stdio=(0, w, 2))
            finally:
                os.close(w)
            with os.fdopen(r) as out:
                text = await trio.to_thread.run_sync(out.read)
            with trio.fail_after(30):
                assert (await proc.wait_exited()).code == 0
            assert text.split() == expected
