"""Red team, the control socket from inside a landlock-only session: the daemon refused peers
in a session by their namespaces, but where the kernel refuses new namespaces (a container,
CI) a session shares every namespace with the host. A program whose profile allows
``socket(AF_UNIX)`` (``"nonod": {"unix_sockets": true}``) connected to its own daemon's
control socket (Landlock ABI 7 does not mediate ``connect``) and was served as its user: it
could list, stop and launch sessions, a launch with the whole host granted included. Now a
peer that descends from the fork server (every session process does: the fork server is a
child subreaper) is refused, whatever its namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from nonod.control._peers import descends_from
from tests.daemon.conftest import reachable_script
from tests.daemon.test_nouserns_daemon import Daemon, daemon

__all__ = ["daemon"]  # the fixture: a daemon where the kernel refuses new namespaces


def test_a_landlock_only_session_cannot_use_its_daemons_control_socket(daemon: Daemon) -> None:
    client = reachable_script("rawclient.py")
    profile = daemon.base / "sockets.json"
    profile.write_text(json.dumps({
        "meta": {"name": "sockets"},
        "filesystem": {"read": ["/usr", "/etc", str(client.parent)]},
        "workdir": {"access": "readwrite"},
        "network": {"block": True},
        "nonod": {"unix_sockets": True,
                  "allow_degraded": ["persistence", "creation_guard", "private_tmp",
                                     "host_unix_sockets", "network_ports", "host_proc",
                                     "host_metadata"]},
    }))
    messages = "\n".join(json.dumps(m) for m in (
        {"type": "hello", "protocol": 1}, {"type": "list"},
        {"type": "launch", "argv": ["/bin/true"], "cwd": "/", "env": {},
         "options": {"allow": ["/"]}, "dry_run": True}))
    done = daemon.ctl("launch", "--profile", str(profile), "--workdir", str(daemon.work), "--",
                      "/bin/sh", "-c", f"printf '%s\\n' '{messages}' | /usr/bin/python3 "
                      f"{client} {daemon.socket}")
    assert "landlock-only" in done.stderr  # the mode this is about
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert replies, done.stdout + done.stderr
    assert replies[0]["type"] == "error", replies  # before: welcome, then the session list
    assert replies[0]["code"] == "auth.refused"
    assert "session" in replies[0]["message"]
    assert len(replies) == 1
    # The user's own client, outside any session, is served as before.
    assert daemon.ctl("ps").returncode == 0


SUBREAPER = r"""
import ctypes, os, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
read, write = os.pipe()
if os.fork() == 0:  # the middle process leaves an orphan behind and exits
    if os.fork() == 0:
        os.close(read)
        os.write(write, str(os.getpid()).encode())
        os.close(write)
        time.sleep(60)
        os._exit(0)
    os._exit(0)
os.close(write)
os.wait()
print(os.read(read, 32).decode(), flush=True)
sys.stdin.read()
"""


def test_an_orphan_still_descends_from_the_subreaper_that_adopted_it() -> None:
    reaper = subprocess.Popen([sys.executable, "-c", SUBREAPER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert reaper.stdout is not None
    orphan = int(reaper.stdout.readline())
    pidfd = os.pidfd_open(orphan)
    try:
        assert descends_from(orphan, pidfd, reaper.pid)  # adopted: its parent is gone
        assert descends_from(orphan, pidfd, os.getpid())  # and further up
        own = os.pidfd_open(os.getpid())
        try:
            assert not descends_from(os.getpid(), own, reaper.pid)
        finally:
            os.close(own)
    finally:
        os.kill(orphan, signal.SIGKILL)
        os.close(pidfd)
        reaper.communicate(timeout=30)
