"""Red team, many accounts' stuck file systems against the system daemon's threads: each uid
has 4 threads for the daemon's work in its file systems (its reads, its launches' plans),
and a thread stuck there (a FUSE mount whose server never answers) keeps its place until it
returns. Nothing bounded the sum: N accounts held 4N of the daemon's threads. Now all uids
together hold at most ``_callerfs.THREADS_IN_ALL``; past it a launch is refused at once with
``daemon.busy``, and below it one user's stuck threads keep no other user waiting."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from nonod import _callerfs
from nonod.sandbox import _api
from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import launch_as, send_launches, shared_daemon, workdir
from tests.sandbox.test_plan_threads import _unanswered_fuse

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                                 reason="switching uids and mounting FUSE need root")]

#: The bound for this test: two accounts' four stuck threads fill it.
BOUND = 8

@pytest.fixture
def daemon(short_tmp: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon (in this process) with the bound lowered, and three real users."""
    monkeypatch.setattr(_callerfs, "THREADS_IN_ALL", BOUND, raising=False)
    # The stuck plans are not given up (30 s) within the test, however loaded the host.
    monkeypatch.setattr(_api, "PLAN_TIMEOUT", 600.0)
    with shared_daemon(short_tmp, 3) as setting:
        yield setting


def _stuck_threads() -> int:
    """This process's threads (the daemon's among them) waiting on a FUSE server."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/wchan", encoding="ascii") as f:
                count += f.read().startswith("fuse")
        except OSError:
            continue
    return count


def _wait_stuck(count: int) -> None:
    """Until ``count`` threads wait on a FUSE server (state no event announces; the bound is
    generous for a loaded host)."""
    deadline = time.monotonic() + 120
    while _stuck_threads() < count:
        assert time.monotonic() < deadline, f"{_stuck_threads()} of {count} threads stuck"
        time.sleep(0.05)


def test_many_accounts_stuck_file_systems_hold_a_bounded_number_of_threads(
        daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (first, second, victim) = daemon
    works = {user.name: workdir(user) for user in (first, second, victim)}
    launchers: list[subprocess.Popen[str]] = []
    with ExitStack() as mounts:
        for user in (first, second):
            stuck = works[user.name] / "stuck"
            stuck.mkdir()
            os.chown(stuck, user.uid, user.gid)
            mounts.enter_context(_unanswered_fuse(stuck))
        try:
            launchers.append(send_launches(handle, first, works[first.name], 4))
            _wait_stuck(4)
            # Below the bound: the first account's stuck threads keep nobody else waiting.
            answer, _ = launch_as(handle, victim, works[victim.name])
            assert answer["type"] == "launched", answer
            launchers.append(send_launches(handle, second, works[second.name], 4))
            _wait_stuck(BOUND)
            # At the bound: refused at once and said why (on main: launched, the daemon
            # holding 4 threads per account whatever the number of accounts).
            answer, took = launch_as(handle, victim, works[victim.name])
            assert answer["type"] == "error", answer
            assert answer["code"] == "daemon.busy", answer
            assert f"all {BOUND} of the daemon's threads" in str(answer["message"]), answer
            assert took < 30, took
            assert _stuck_threads() == BOUND
        finally:
            mounts.close()  # (the servers' ends closed: the stuck looks return)
            for launcher in launchers:
                launcher.communicate(timeout=300)
    assert _stuck_threads() == 0
