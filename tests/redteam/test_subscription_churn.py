"""Red team, the daemon's memory grown by one user's subscriptions that ended. ``subscribe``,
``audit_follow`` and ``logs --follow`` each add a subscriber to a list the daemon walks when
something is published, and one whose connection closed was forgotten only when the next
event, audit record or output came. On a quiet daemon (or for a quiet session of the user's
own) a member of the socket group connected, subscribed and closed, again and again: every
subscription stayed (about 2 KiB each, a few hundred a second from one process, unbounded).
Now each list drops its closed subscribers whenever a new one is added."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nonod.sessions import Caller
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import client_dir, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: Connects N times; each time sends one request (JSON, argv[4]), reads the first reply (if
#: argv[5] says so: a quiet session's ``logs --follow`` has none) and closes the connection.
#: Prints "done".
CHURN = r"""
import sys
sys.path.insert(0, sys.argv[1])
from rawclient import frame, read_frame, welcomed
path, count, message = sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
for _ in range(count):
    sock, _ = welcomed(path)
    sock.sendall(frame(message))
    if sys.argv[5] == "read":
        read_frame(sock)
    sock.close()
print("done", flush=True)
"""

#: Connections per kind of subscription: before, each left one subscriber behind (the test
#: asks for at most 2 left), so 100 tell as surely as 300 did, in a third of the time.
CHURNS = 100


def _churn(handle: DaemonThread, user: LocalUser, message: dict[str, object],
           read: bool = True) -> None:
    done = subprocess.run(
        [*user.prefix(), SYSTEM_PYTHON, "-c", CHURN, client_dir(), str(handle.socket),
         str(CHURNS), json.dumps(message), "read" if read else "no"],
        capture_output=True, text=True, timeout=120, check=False, cwd="/")
    assert done.stdout.strip() == "done", done.stderr


def test_subscriptions_that_ended_do_not_pile_up_in_a_quiet_daemon(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (_owner, attacker) = two_users
    assert handle.server is not None
    registry = handle.server.registry
    hub = registry.audit_hub
    assert hub is not None
    # A live session of the attacker's own that prints nothing: its output offers nothing.
    work = workdir(attacker)
    launch = {"type": "launch", "argv": ["sleep", "600"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True}, "detach": True,
              "stdio": "pty", "name": "quiet"}
    reply = json.loads(raw_client(handle.socket, [hello(), launch], prefix=attacker.prefix())[1])
    assert reply["type"] == "launched", reply
    session = registry.find("quiet", Caller(uid=0, gid=0, pid=os.getpid()))
    try:
        _churn(handle, attacker, {"type": "subscribe"})
        _churn(handle, attacker, {"type": "audit_follow", "follow": True, "kinds": ["seal"]})
        _churn(handle, attacker, {"type": "logs", "session": "quiet", "follow": True},
               read=False)
        # What is left is what the last connections held (before: one per connection).
        assert len(registry._feeds) <= 2, len(registry._feeds)
        assert hub.statistics().subscribers <= 2, hub.statistics()
        assert session.output is not None
        assert len(session.output._subs) <= 2, len(session.output._subs)
    finally:
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "quiet",
                                             "force": True}], prefix=attacker.prefix())
