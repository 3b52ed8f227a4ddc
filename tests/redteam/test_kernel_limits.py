"""Red team, per-user kernel limits shared with the host: a session runs as its owner's uid,
and the kernel counts inotify instances (``fs.inotify.max_user_instances``, 128 on Debian)
and watches per uid across every user namespace. A session that takes them all leaves its
owner's host processes (editors, file managers, ``tail -f``) and the daemon's view guard of the
next session without any: measured here, a root session took the last 121 of root's.

Closed in the launcher: it lowers ``/proc/sys/user/max_inotify_instances`` and
``max_inotify_watches`` in the session's own user namespace while it holds
``CAP_SYS_RESOURCE`` there (the kernel charges a child namespace's counts to its parents, so
a child limit bounds the session)."""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import hello, raw_client, session_env
from tests.daemon.test_cli import CLI
from tests.redteam.conftest import shared_daemon, workdir

pytestmark = [pytest.mark.root, pytest.mark.userns,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

GRAB = r'''
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 100000 and (fd := libc.inotify_init1(0)) >= 0:
    held.append(fd)
print(len(held), flush=True)
time.sleep(120)
'''
TRY = "import ctypes; print(ctypes.CDLL(None).inotify_init1(0))"


def test_a_session_cannot_take_its_owners_last_inotify_instance(short_tmp: Path) -> None:
    # Its owner is a user of its own: nobody's instances are shared with every session of
    # the concurrent test runs on the host, which may hold some at any moment.
    with shared_daemon(short_tmp, 1) as (handle, [owner]):
        work = workdir(owner)
        (work / "grab.py").write_text(GRAB)
        launch = {"type": "launch", "argv": ["/usr/bin/python3", "-S", "grab.py"],
                  "cwd": str(work), "env": session_env(work), "options": {"allow_cwd": True},
                  "detach": True, "stdio": "pty", "name": "grabber"}
        replies = [json.loads(x) for x in raw_client(handle.socket, [hello(), launch],
                                                     prefix=owner.prefix())]
        assert replies[1]["type"] == "launched", replies
        try:
            # The first output of the session: how many it took (the read is bounded).
            follow = {"type": "logs", "session": "grabber", "follow": True}
            output = json.loads(raw_client(handle.socket, [hello(), follow],
                                           prefix=owner.prefix())[1])
            taken = int(base64.b64decode(str(output["data"])))
            assert taken > 0
            host = subprocess.run([*owner.prefix(), "/usr/bin/python3", "-c", TRY],
                                  capture_output=True, text=True, check=True, cwd="/")
            assert int(host.stdout) >= 0, f"the session took {taken}; the host got none"
        finally:
            raw_client(handle.socket, [hello(), {"type": "stop", "session": "grabber",
                                                 "force": True}], prefix=owner.prefix())


#: Queues real-time signals to itself until the kernel says no, prints how many it got, then
#: holds them until its stdin closes.
HOARD = r'''
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
class sigval(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
queued = 0
while queued < 1000000 and libc.sigqueue(os.getpid(), signal.SIGRTMIN, sigval(1)) == 0:
    queued += 1
print(queued, flush=True)
sys.stdin.read()
'''
#: What the owner's host processes need: a queued signal and a POSIX timer.
HOST = r'''
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
class sigval(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
timer = ctypes.c_void_p()
print(libc.sigqueue(os.getpid(), signal.SIGRTMIN, sigval(1)) == 0,
      libc.timer_create(1, None, ctypes.byref(timer)) == 0)
'''


def test_a_session_leaves_its_owner_queued_signals_and_timers(run: CLI, short_tmp: Path
                                                              ) -> None:
    (short_tmp / "hoard.py").write_text(HOARD)
    hoarder = subprocess.Popen(
        [sys.executable, "-m", "nonoctl", "launch", "--allow-cwd", "--block-net", "--",
         "/usr/bin/python3", "-S", "hoard.py"], env=run.env, cwd=short_tmp,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert hoarder.stdout is not None
        queued = int(hoarder.stdout.readline())
        assert 0 < queued <= resource.getrlimit(resource.RLIMIT_SIGPENDING)[0] // 8
        host = subprocess.run(["/usr/bin/python3", "-S", "-c", HOST], capture_output=True,
                              text=True, check=True, cwd="/")
        assert host.stdout.split() == ["True", "True"], (queued, host)
    finally:
        hoarder.communicate(input="", timeout=60)
    assert hoarder.returncode == 0
