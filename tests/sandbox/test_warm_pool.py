"""The fork server's warm launchers at idle: two per kind of launch while launches come, one
once none came for ``warm_idle`` seconds, two again after the next launch.

Counted as the kernel shows them: the fork server's children that are not zombies (each
warm launcher's outer process; its init is the outer's child).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from nonod.policy import Access, Grant, ResolvedPolicy
from nonod.sandbox import LaunchRequest, open_launcher
from nonod.sandbox._forkserver import WARM_DEPTH

pytestmark = pytest.mark.userns


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids.update(int(k) for k in (task / "children").read_text().split())
    return {k for k in kids if _state(k) not in ("Z", "X", "")}


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _state(pid: int) -> str:
    return (_stat(pid) or [""])[0]


def _oldest(pids: set[int]) -> int:
    return min(pids, key=lambda pid: int(_stat(pid)[19]))  # starttime, in clock ticks


async def _until(what: str, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds."""
    try:
        with trio.fail_after(20):
            while not check():
                await trio.sleep(0.01)
    except trio.TooSlowError:
        pytest.fail(f"not within 20 s: {what}")


async def test_warm_launchers_beyond_one_end_after_warm_idle_and_come_back(
    world_tmp: Path,
) -> None:
    policy = ResolvedPolicy(name="warm", grants=(Grant(path="/usr", access=Access.READ),),
                            denials=())
    request = LaunchRequest(argv=("/usr/bin/true",), cwd="/")
    async with open_launcher("namespaces", warm_idle=0.5) as launcher:
        server = launcher._proc.pid

        async def launch() -> None:
            proc = await launcher.launch(policy, request, stdio=(0, 1, 2))
            with trio.fail_after(30):
                assert (await proc.wait_exited()).code == 0

        await launch()
        await _until("the pool refilled", lambda: len(_children(server)) == WARM_DEPTH)
        kept = _oldest(_children(server))  # kept: the one the next launch takes
        await _until("the pool shrank", lambda: _children(server) == {kept})
        await launch()
        await _until("the pool refilled", lambda: len(_children(server)) == WARM_DEPTH)
        assert kept not in _children(server)
