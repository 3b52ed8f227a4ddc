"""No core dump of the daemon or its fork server, which hold real keys and launch plans
(issue 19, item 8: the core dump part).

The daemon runs as an unprivileged user here: the kernel gives a process that is not dumpable
``/proc/<pid>/*`` entries owned by root instead of by its own uid, which is how the test reads
the flag of another process. ``RLIMIT_CORE`` is read from ``/proc/<pid>/limits``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NOBODY, as_user, wait_pid_gone

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="running the daemon as another uid needs root"),
]


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


def test_the_daemon_and_its_fork_server_dump_no_core(short_tmp: Path) -> None:
    base = short_tmp / "user"
    base.mkdir(mode=0o700)
    os.chown(base, NOBODY, NOBODY)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "PYTHONPATH": str(REPO),
           "XDG_STATE_HOME": str(base / "state"), "XDG_CONFIG_HOME": str(base / "config")}
    socket_path = base / "run" / "nonod.sock"
    started = subprocess.run(
        [*as_user(NOBODY), sys.executable, "-m", "nonod", "--socket", str(socket_path)],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert started.returncode == 0, started.stderr
    client = [*as_user(NOBODY), sys.executable, "-m", "nonoctl", "--socket", str(socket_path)]
    status = subprocess.run([*client, "daemon", "status", "--json"], env=env, cwd=base,
                            capture_output=True, text=True, timeout=60, check=True)
    daemon_pid = int(json.loads(status.stdout)["pid"])
    try:
        launched = subprocess.run([*client, "launch", "--allow-cwd", "--", "true"], env=env,
                                  cwd=base, capture_output=True, text=True, timeout=60)
        assert launched.returncode == 0, launched.stderr  # the fork server runs now
        servers = [pid for pid in _children(daemon_pid)
                   if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(servers) == 1
        for pid in (daemon_pid, servers[0]):
            assert f"Uid:\t{NOBODY}\t{NOBODY}\t" in Path(f"/proc/{pid}/status").read_text()
            assert os.stat(f"/proc/{pid}/fd").st_uid == 0, "dumpable: /proc/<pid>/fd is its own"
            assert _core_limit(pid) == ("0", "0")
    finally:
        subprocess.run([*client, "daemon", "stop"], env=env, cwd=base, capture_output=True,
                       timeout=60, check=False)
        if not wait_pid_gone(daemon_pid, timeout=30):
            os.kill(daemon_pid, 9)
