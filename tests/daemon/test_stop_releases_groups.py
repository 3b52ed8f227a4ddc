"""A daemon stopped in its process leaves none of its sessions' cgroup files open: the groups
of the sessions that ended just before the stop were still queued for their batched removal
(``nonod/sessions/_removals.py``), and each kept nine control files open (the test suite ran
out of descriptors after a few hundred daemons)."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import DaemonThread
from .test_cli import CLI, cli_env


def _cgroup_files() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/sys/fs/cgroup/"):
            found.append(target)
    return found


def test_a_stopped_daemon_keeps_no_session_groups_files(short_tmp: Path) -> None:
    before = _cgroup_files()
    daemon = DaemonThread(short_tmp).start()
    try:
        run = CLI(cli_env(daemon.socket, short_tmp), short_tmp)
        for _ in range(3):
            done = run("launch", "--allow-cwd", "--block-net", "--", "/bin/true")
            assert done.returncode == 0, done.stderr
    finally:
        daemon.stop()
    assert _cgroup_files() == before
