"""No core dump of the daemon or its fork server, which hold real keys and launch plans
(issue 19, item 8: the core dump part).

The daemon runs as an unprivileged user here: the kernel gives a process that is not dumpable
``/proc/<pid>/*`` entries owned by root instead of by its own uid, which is how the test reads
the flag of another process. ``RLIMIT_CORE`` is read from ``/proc/<pid>/limits``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import NOBODY, UserDaemon

pytestmark = pytest.mark.root


def _core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4], line.split()[5]  # soft, hard
    raise AssertionError("no core limit")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_the_daemon_and_its_fork_server_dump_no_core(user_daemon: UserDaemon) -> None:
    launched = user_daemon.nonoctl("launch", "--allow", str(user_daemon.home), "--", "true")
    assert launched.returncode == 0, launched.stderr  # the fork server runs now
    servers = [pid for pid in _children(user_daemon.pid)
               if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(servers) == 1
    for pid in (user_daemon.pid, servers[0]):
        assert f"Uid:\t{NOBODY}\t{NOBODY}\t" in Path(f"/proc/{pid}/status").read_text()
        assert os.stat(f"/proc/{pid}/fd").st_uid == 0, "dumpable: /proc/<pid>/fd is its own"
        assert _core_limit(pid) == ("1", "1")  # 1 byte: no dump, not even to a pipe
