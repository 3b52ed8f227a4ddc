"""Red team, thirty-fifth pass: a user's own launch on the system daemon, read and held
by that user from the host.

Every launch of another user than root is cold (``_forkserver.Pool.keys``): the fork server
(root) forks an outer launcher (``_launcher.run_outer``), which switches to the user's uids
and then made itself dumpable again (``_switch_user``) so that it could write its own id
maps after ``unshare``; it stayed dumpable until its init was forked, and the init (its
child) until its fresh root was made. For that time both were processes of the user's uid
in the host's user namespace that the user could ``ptrace``, whose ``/proc/<pid>/mem``,
``environ`` and descriptors (``pidfd_getfd``) the user could take: a copy of the root fork
server's whole memory, the launch's pipes to the fork server, its socket to the guard hub
(root), the idmapped trees of the plan. Tried: a watcher of the user's read the memory of
19 of 20 such launchers.

Now the outer no longer makes itself dumpable after the switch: the fork server writes its
maps (``_launcher.map_ids``, as it does for a direct init) once it says it has its new
user namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, hello, raw_client, session_env
from tests.proctree import children, stat
from tests.redteam.conftest import send_launches, shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: The user's watcher: until its stdin closes, every new process of its uid whose memory it can open
#: and read is counted, as a launcher (its command line is the fork server's, in hex in ARGV 1) or
#: as anything else (the sessions' programs: the watcher is quick enough to see them). One it
#: cannot read yet (a program before its execve, a launcher not dumpable) is looked at again
#: until it is gone.
WATCH = r'''
import json, os, select, sys
server = bytes.fromhex(sys.argv[1])
me = os.getuid()
seen = set(int(p) for p in os.listdir("/proc") if p.isdigit())  # before, and done with
found = {"launchers": 0, "programs": 0, "descriptors": []}
print("watching", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in seen:
            continue
        pid = int(name)
        try:
            if os.stat(f"/proc/{pid}").st_uid != me:
                continue  # not dumpable (root's) yet, or another user's: looked at again
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            fds = sorted(os.readlink(f"/proc/{pid}/fd/{fd}")
                         for fd in os.listdir(f"/proc/{pid}/fd"))
            maps = open(f"/proc/{pid}/maps").read().split("\n", 1)[0].split()[0]
            with open(f"/proc/{pid}/mem", "rb", 0) as mem:
                mem.seek(int(maps.split("-")[0], 16))
                mem.read(4096)
            if open(f"/proc/{pid}/cmdline", "rb").read() != cmdline:
                continue  # it ran execve between the reads: what was read is not known
        except FileNotFoundError:
            seen.add(pid)  # gone
            continue
        except (OSError, ValueError, IndexError):
            continue  # (a program seen before its execve, a launcher not dumpable yet)
        seen.add(pid)
        if cmdline == server:
            found["launchers"] += 1
            found["descriptors"].append(fds)
        else:
            found["programs"] += 1
print(json.dumps(found), flush=True)
'''


def test_a_user_cannot_read_or_hold_the_launchers_of_its_own_launches(
        short_tmp: Path) -> None:
    with shared_daemon(short_tmp, 1) as (handle, (user,)):
        work = workdir(user)
        launch = {"type": "launch", "argv": ["/bin/sleep", "0.5"], "cwd": str(work),
                  "env": session_env(work), "detach": True, "stdio": "null",
                  "options": {"allow_cwd": True, "block_net": True}}
        reply = raw_client(handle.socket, [hello(), launch], prefix=user.prefix(), timeout=60)
        assert json.loads(reply[1])["type"] == "launched", reply  # the fork server runs
        [server] = [pid for pid in children(os.getpid())
                    if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        cmdline = Path(f"/proc/{server}/cmdline").read_bytes().hex()
        watcher = subprocess.Popen([*user.prefix(), SYSTEM_PYTHON, "-c", WATCH, cmdline],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   cwd="/")
        try:
            assert watcher.stdout is not None
            assert watcher.stdout.readline().strip() == "watching"
            for _ in range(12):
                reply = raw_client(handle.socket, [hello(), launch], prefix=user.prefix(),
                                   timeout=60)
                assert json.loads(reply[1])["type"] == "launched", reply
        finally:
            out, _ = watcher.communicate("", timeout=60)
    found = json.loads(out)
    assert found["programs"] > 0, found  # it sees the user's processes it may read
    # before: 11 or 12 of 12 launchers read, holding the fork server's pipes, the hub's
    # socket and the reaper's memfd
    assert found["launchers"] == 0, found


#: The user's stopper: until its stdin closes, every new child of the fork server (pid in
#: ARGV 1; its children are in its ``/proc`` for every user to read) is stopped
#: (``SIGSTOP``) as soon as the user may signal it; prints how many were.
STOPPER = r'''
import os, select, signal, sys
children = f"/proc/{sys.argv[1]}/task/{sys.argv[1]}/children"
seen = set(open(children).read().split())
waiting, stopped = set(), 0
print("stopping", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    for pid in open(children).read().split():
        if pid not in seen:
            seen.add(pid)
            waiting.add(int(pid))
    for pid in list(waiting):
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped += 1
        except PermissionError:
            continue  # root's still
        except OSError:
            pass
        waiting.discard(pid)
print(stopped, flush=True)
'''


def _stopped_launchers(server: int) -> bool:
    """Whether a child of the fork server ``server`` is stopped."""
    return any((stat(pid) or ["X"])[0] == "T" for pid in children(server))


def test_a_user_stopping_its_launchers_holds_no_other_users_launch_up(
        short_tmp: Path) -> None:
    """The fork server waits for a cold launcher's word before it writes its id maps: a
    launcher its user could stop there would hold every launch of the daemon up."""
    with shared_daemon(short_tmp, 2) as (handle, (stopper, other)):
        work, theirs = workdir(stopper), workdir(other)
        launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
                  "env": session_env(work), "detach": True, "stdio": "null",
                  "options": {"allow_cwd": True, "block_net": True}}
        reply = raw_client(handle.socket, [hello(), launch], prefix=stopper.prefix())
        assert json.loads(reply[1])["type"] == "launched", reply  # the fork server runs
        [server] = [pid for pid in children(os.getpid())
                    if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        stopping = subprocess.Popen([*stopper.prefix(), SYSTEM_PYTHON, "-c", STOPPER, str(server)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    cwd="/")
        try:
            assert stopping.stdout is not None
            assert stopping.stdout.readline().strip() == "stopping"
            # four launches at once (the user's share), each launcher stopped once its user
            # may stop it; not waited for
            held = send_launches(handle, stopper, work, 4)
            deadline = time.monotonic() + 30
            while not _stopped_launchers(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            mine = {**launch, "cwd": str(theirs), "env": session_env(theirs),
                    "argv": ["/bin/sleep", "0"], "name": "mine", "detach": False}
            started = time.monotonic()
            lines = raw_client(handle.socket, [hello(), mine], prefix=other.prefix(),
                               timeout=120)
            took = time.monotonic() - started
            held.kill()
            held.communicate(timeout=60)
        finally:
            out, _ = stopping.communicate("", timeout=60)
        assert int(out.strip()) > 0  # it stopped launchers, once they were its user's
        answers = [json.loads(line) for line in lines if line.startswith("{")]
        assert answers[1:2] and answers[1]["type"] == "launched", lines
        assert took < 3, took  # with a wait in place: the server waited on a stopped launcher



def test_a_launcher_its_user_stopped_is_killed_once_its_launch_is_given_up(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """review28, tried and held: a cold launcher becomes its session's user before its init
    exists, and its user may stop it then (as above), before or after its id maps. The
    daemon gives such a launch up after ``LAUNCH_TIMEOUT`` and kills the init of a launch it
    gave up on, which this one does not have; kept, the stopped launcher would hold the fork
    server's sockets for it (its cue, its hub client, before its maps its ``_Maps`` entry,
    which also keeps the server from its fresh start) for good. It is not kept: the refused
    launch's group is removed, and what is in it killed (``cgroup.kill``), the launcher
    among them (it joined the group first)."""
    from nonod.sandbox import _api

    monkeypatch.setattr(_api, "LAUNCH_TIMEOUT", 8.0)  # (the first launch starts the server)
    with shared_daemon(short_tmp, 1) as (handle, [stopper]):
        work = workdir(stopper)
        launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
                  "env": session_env(work), "detach": True, "stdio": "null",
                  "options": {"allow_cwd": True, "block_net": True}}
        reply = raw_client(handle.socket, [hello(), launch], prefix=stopper.prefix())
        assert json.loads(reply[1])["type"] == "launched", reply  # the fork server runs
        [server] = [pid for pid in children(os.getpid())
                    if b"_forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        stopping = subprocess.Popen([*stopper.prefix(), SYSTEM_PYTHON, "-c", STOPPER, str(server)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    cwd="/")
        try:
            assert stopping.stdout is not None
            assert stopping.stdout.readline().strip() == "stopping"
            held = send_launches(handle, stopper, work, 2)
            deadline = time.monotonic() + 30
            while not _stopped_launchers(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            stopped = [pid for pid in children(server) if (stat(pid) or ["X"])[0] == "T"]
            # the daemon gives the launches up after 8 s; then 15 s more
            deadline = time.monotonic() + 23
            while time.monotonic() < deadline and \
                    any((stat(pid) or ["X"])[0] == "T" for pid in stopped):
                time.sleep(0.1)
            left = [pid for pid in stopped if (stat(pid) or ["X"])[0] == "T"]
            held.kill()
            held.communicate(timeout=60)
        finally:
            out, _ = stopping.communicate("", timeout=60)
        assert int(out.strip()) > 0 and stopped  # it stopped launchers before their inits
        assert left == []  # killed with their refused launch's group
