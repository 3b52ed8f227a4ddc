"""Red team, eighth pass: the host's tree watched from a landlock-only session. Landlock (ABI
7) does not check ``inotify_add_watch``: without a mount namespace a session put a watch on a
host directory outside its grants (any directory its uid may read, ``~/.ssh`` of its own
user's home included) and read the names of the files the host created, opened and removed
there; and it took every inotify instance of its uid on the host (``max_user_instances`` is
counted per uid, with no user namespace of the session's own to lower it), so that the user's
daemon and programs (for a root session, systemd) could no longer watch anything. Now seccomp
answers ``inotify_init``, ``inotify_init1`` and ``inotify_add_watch`` with ``ENOSYS`` in that
mode, as a kernel without inotify would."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nonod.sandbox import LaunchRequest
from tests.conftest import SandboxUser
from tests.redteam import _landlock_only as landlock_only
from tests.redteam._landlock_only import PYTHON

WATCH = r"""
import ctypes, errno, os, select, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
if fd < 0:
    print("inotify_init1", errno.errorcode[ctypes.get_errno()])
    sys.exit(0)
if libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x100) < 0:  # IN_CREATE
    print("inotify_add_watch", errno.errorcode[ctypes.get_errno()])
    sys.exit(0)
print("watching", flush=True)
if select.select([fd], [], [], 20)[0]:
    data = os.read(fd, 4096)
    print("seen", data[16:].split(b"\0")[0].decode())
"""


def test_a_landlock_only_session_cannot_watch_the_hosts_tree(
        sandbox_user: SandboxUser, world_tmp: Path) -> None:
    work, host = world_tmp / "work", world_tmp / "host"
    work.mkdir()
    host.mkdir(mode=0o755)  # readable by the session's uid, not granted
    host.chmod(0o755)
    sandbox_user.chown(work)
    policy = landlock_only.policy(work)
    request = LaunchRequest(argv=(PYTHON, "-S", "-c", WATCH, str(host)), cwd=str(work))
    done = threading.Event()

    def host_activity() -> None:  # the host's own files, made while the session runs
        n = 0
        while not done.is_set():
            path = host / f"secret-name-{n % 100}"
            path.touch()
            path.unlink()
            n += 1

    activity = threading.Thread(target=host_activity)
    activity.start()
    try:
        result = sandbox_user.run_request(policy, request, nouserns=True)
    finally:
        done.set()
        activity.join()

    assert result.code == 0, result.stderr
    assert "POSIX message queues and inotify are refused by seccomp" in result.stderr
    # Before: "watching", then "seen secret-name-N".
    assert result.stdout.splitlines() == ["inotify_init1 ENOSYS"], result.stdout
    assert os.listdir(host) == []
