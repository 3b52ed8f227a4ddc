"""Red team, a launch refused because its launcher did not report: its session's cgroup was
removed before the refusal went out, for up to ``REMOVE_TIMEOUT`` (5 s), and a launcher
stuck in the kernel (here in the user's FUSE file system, which never answers it) cannot be
killed: every such refusal came ``REMOVE_TIMEOUT`` after the launch's timeout, on top of
it. Now the group goes to the queue of ended sessions' groups (``_removals``): the refusal
is answered at once, and the group is still removed once its processes can go."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod.sandbox import _api
from nonod.sessions import _limits
from tests.daemon.conftest import DaemonThread
from tests.daemon.localusers import LocalUser
from tests.fusepicky import picky_fuse
from tests.redteam.conftest import launch_as, shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                                 reason="switching uids and mounting FUSE need root")]

#: The launch's timeout for this test (the daemon runs in this process).
TIMEOUT = 3.0


@pytest.fixture
def daemon(short_tmp: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", TIMEOUT)
    with shared_daemon(short_tmp, 1) as setting:
        yield setting


def _groups_of(uid: int) -> set[Path]:
    """The cgroup directories (v1 and v2) of ``uid``'s processes other than the root's."""
    found: set[Path] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if path in ("", "/") or controllers.startswith("name="):
                continue
            for controller in controllers.split(",") or [""]:
                where = Path("/sys/fs/cgroup", controller, path.lstrip("/"))
                if where.is_dir():
                    found.add(where)
    return found


def test_a_refused_launch_is_answered_without_waiting_for_its_group(
        daemon: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (user,) = daemon
    work = workdir(user)
    where = work / "fs"
    where.mkdir()
    assert _limits.REMOVE_TIMEOUT == 5.0  # the default: no test lowers it here
    with picky_fuse(where, user.uid, user.gid) as program:
        answer, took = launch_as(handle, user, work, (str(program),))
        assert answer.get("code") == "launch.failed", answer
        assert "did not report" in str(answer["message"]), answer
        # On main: TIMEOUT + REMOVE_TIMEOUT (8 s) at the least (8.1 s measured); about
        # TIMEOUT now (3.3 s): a second of the wait left as margin for a loaded host.
        assert took < TIMEOUT + _limits.REMOVE_TIMEOUT - 1, took
        groups = _groups_of(user.uid)  # the stuck launcher's, still there
        assert groups, "the stuck launcher has no cgroup of the daemon's"
    # The file system gone, the launcher can die: its group is removed from the queue.
    deadline = time.monotonic() + _limits.REMOVE_TIMEOUT
    while any(group.exists() for group in groups):
        assert time.monotonic() < deadline, [str(g) for g in groups if g.exists()]
        time.sleep(0.1)
