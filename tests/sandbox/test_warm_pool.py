"""The fork server's warm launchers at idle: two per kind of launch while launches come, one
once none came for ``warm_idle`` seconds, two again after the next launch.

Counted as the kernel shows them: the fork server's live children (each warm launcher's
outer process; its init is the outer's child).
"""

from __future__ import annotations

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._forkserver import WARM_DEPTH

from ..proctree import children, oldest, wait_until

pytestmark = pytest.mark.userns


async def test_warm_launchers_beyond_one_end_after_warm_idle_and_come_back() -> None:
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
            wait_until(f"{count} warm launchers", lambda: len(children(server)) == count)

        await launch()
        await trio.to_thread.run_sync(pooled, WARM_DEPTH)
        kept = oldest(children(server))  # kept: the one the next launch takes
        await trio.to_thread.run_sync(pooled, 1)
        assert children(server) == {kept}
        await launch()
        await trio.to_thread.run_sync(pooled, WARM_DEPTH)
        assert kept not in children(server)
