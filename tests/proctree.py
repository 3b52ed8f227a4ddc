"""Processes as the kernel shows them, for tests that count a fork server's warm launchers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def children(pid: int) -> set[int]:
    """``pid``'s live children (zombies left out; none once ``pid`` has exited)."""
    kids: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids.update(int(k) for k in (task / "children").read_text().split())
    except OSError:  # ``pid`` (or one of its threads) exited meanwhile
        pass
    return {k for k in kids if (stat(k) or ["X"])[0] not in ("Z", "X")}


#: The fork server's spawner of C inits (``_cinit.Spawner``): a child of the server while
#: launchers wait, none itself.
SPAWNER = "nono-spawner"


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def launchers(server: int) -> set[int]:
    """A fork server's live children but its spawner: its warm launchers (their outer
    process, or their init), the sessions' inits and its repairs."""
    return {pid for pid in children(server) if comm(pid) != SPAWNER}


def oldest(pids: set[int]) -> int:
    return min(pids, key=lambda pid: int(stat(pid)[19]))  # starttime, in clock ticks


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    """Wait (bounded) until ``check()`` holds: for state no event announces."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)
