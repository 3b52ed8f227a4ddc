"""The fork server's warm launchers at idle: after a launch, one with the policy's view built
and one with namespaces and an empty root; once no launch came for ``warm_idle`` seconds, both
are dropped (an idle daemon keeps none); the next launch is made cold and both come back.

Counted as the kernel shows them: the fork server's live children (each warm launcher's
outer process; its init is the outer's child).
"""

from __future__ import annotations

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher

from ..proctree import launchers, wait_until

pytestmark = pytest.mark.userns


async def test_a_views_launcher_ends_after_warm_idle_and_comes_back() -> None:
    policy = ResolvedPolicy(name="warm", grants=(Grant(path="/usr", access=Access.READ),),
                            denials=())
    request = LaunchRequest(argv=("/usr/bin/true",), cwd="/")
    async with open_launcher("namespaces", warm_idle=0.5) as launcher:
        server = launcher._proc.pid  # the server's pid, to count its children

        async def launch() -> None:
            proc = await launcher.launch(policy, request, stdio=(0, 1, 2))
            with trio.fail_after(30):
                assert (await proc.wait_exited()).code == 0

        def pooled(count: int) -> None:  # the server answers nothing: watch it from here
            wait_until(f"{count} warm launchers", lambda: len(launchers(server)) == count)

        await launch()
        await trio.to_thread.run_sync(pooled, 2)  # the view's and the plain one
        await trio.to_thread.run_sync(pooled, 0)  # idle: none kept
        await launch()  # cold
        await trio.to_thread.run_sync(pooled, 2)
