"""A long-running daemon keeps nothing per request or per ended session: after a burst, its
own tables and its event loop's timers are what they were before it.

- Each control request used to leave two trio deadlines behind (the wait for the next request,
  ``idle_timeout``, ten minutes; the reply's ``send_timeout``), each a cancel scope kept in
  trio's heap until its deadline passed: hundreds after a burst
  (``nonod/control/_timeouts.py``; docs/benchmarks.md, "idle6").
- Launched, ended and pruned sessions leave no entry in the registry's tables, no cgroup
  queued for removal, no pending approval, and no object of a cgroup already removed (the
  removal task held its last batch until the next session ended).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from nonoctl.client import Client
from nonod import protocol as p
from nonod.cgroups._v1 import V1Group
from nonod.cgroups._v2 import V2Group
from nonod.control import ControlServer

from .conftest import DaemonThread, session_env

T = TypeVar("T")


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[DaemonThread]:
    handle = DaemonThread(short_tmp).start()
    yield handle
    handle.stop()


def _in_daemon(daemon: DaemonThread, look: Callable[[ControlServer], T]) -> T:
    """``look`` at the server from the daemon's own event loop (between its tasks' steps)."""
    server = daemon.server
    assert server is not None
    return trio.from_thread.run_sync(look, server, trio_token=daemon._token)


def _cancel_scopes() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, trio.CancelScope))


def _removed_groups() -> list[str]:
    """The session cgroups this process still has objects of whose directory is gone."""
    gc.collect()
    return [o.path for o in gc.get_objects()
            if isinstance(o, V1Group | V2Group) and o.path and not os.path.isdir(o.path)]


def test_requests_leave_no_timer_behind(daemon: DaemonThread) -> None:
    with Client(daemon.socket, autostart=False) as nono:
        for _ in range(20):
            nono.status()
        before = _cancel_scopes()
        for _ in range(300):
            nono.status()
        after = _cancel_scopes()
        # Before: 600 more (a request's wait and its reply's send, each a deadline in trio's
        # heap, kept there until the deadline passed).
        assert after - before < 20
        # The one connection, waiting for its next request: its idle timeout, listed once.
        assert _in_daemon(daemon, lambda server: len(server.timeouts)) == 1


def test_ended_sessions_leave_nothing_in_the_daemons_tables(
    daemon: DaemonThread, short_tmp: Path
) -> None:
    work = short_tmp / "work"
    work.mkdir()
    options = p.LaunchOptions(allow_cwd=True, block_net=True)
    with Client(daemon.socket, autostart=False) as nono:
        for _ in range(30):
            session = nono.launch(["/bin/true"], cwd=str(work), env=session_env(work),
                                  stdio="null", options=options)
            assert nono.wait(session.id).exit_code == 0
        assert len(nono.prune()) == 30

        async def tables(server: ControlServer) -> dict[str, int]:
            registry = server.registry
            await registry._removals.drained()
            return {
                "sessions": len(registry._sessions), "live": len(registry._live),
                "live names": len(registry._live_names),
                "live per uid": sum(registry._live_per_uid.values()),
                "truncated": len(registry._truncated), "feeds": len(registry._feeds),
                "cgroups queued": registry._removals.pending(),
                "approvals": len(registry.approvals._pending),
                "timeouts": len(server.timeouts),
            }

        assert daemon.server is not None
        left = trio.from_thread.run(tables, daemon.server, trio_token=daemon._token)
        assert _removed_groups() == []
    assert left == {"sessions": 0, "live": 0, "live names": 0, "live per uid": 0,
                    "truncated": 0, "feeds": 0, "cgroups queued": 0, "approvals": 0,
                    "timeouts": 1}
