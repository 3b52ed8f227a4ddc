"""Red team, approvals: a session whose profile asks about unlisted hosts floods them. Before,
every flood request became a pending approval (and for a webhook backend, a call): one
session could bury its owner's queue, and filling the daemon's 1024 places got every other
session's and every other user's requests refused. Now one session has at most
MAX_OPEN_PER_SESSION questions open (the rest refused at once, decider ``limit``) and one user
at most MAX_PENDING_PER_UID places in the daemon's queue."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from nonod.approvals import ApprovalLimit, ApprovalQueue
from nonod.approvals._asker import MAX_OPEN_PER_SESSION
from nonod.approvals._queue import Pending
from tests.approvals.conftest import PY, Setup, next_pending
from tests.approvals.conftest import fake_host as fake_host  # the fixture
from tests.approvals.conftest import setup as setup  # the fixture

pytestmark = [pytest.mark.root, pytest.mark.userns]

FLOOD = 40
ASK = {"approval_defaults": {"backend": "queue", "timeout_secs": 120}}

#: Sends FLOOD CONNECTs to distinct unlisted hosts at once; prints how many were refused
#: without being held, then holds the rest until it is killed.
FLOOD_PROGRAM = r'''
import base64, os, select, socket, sys, time
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
count, expect = int(sys.argv[1]), int(sys.argv[2])
socks = []
for n in range(count):
    s = socket.create_connection((proxy.hostname, proxy.port))
    s.sendall(f"CONNECT flood-{n}.example.org:443 HTTP/1.1\r\nHost: x\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    socks.append(s)
refused, deadline = 0, time.monotonic() + 60
while refused < expect and time.monotonic() < deadline:
    for s in select.select(socks, [], [], 1)[0]:
        if s.recv(100).startswith(b"HTTP/1.1 403"):
            refused += 1
        socks.remove(s)
print("refused", refused, flush=True)
time.sleep(600)
'''


def test_one_session_flooding_unlisted_hosts_holds_a_bounded_share(setup: Setup) -> None:
    profile = setup.profile(ASK)
    (setup.base / "flood.py").write_text(FLOOD_PROGRAM)
    held = FLOOD - MAX_OPEN_PER_SESSION
    with setup.client() as client, setup.events(client) as events:
        flooder = setup.cli.popen("launch", "--profile", str(profile), "--", PY, "-S",
                                  str(setup.base / "flood.py"), str(FLOOD), str(held))
        try:
            assert flooder.stdout is not None
            assert flooder.stdout.readline().split() == [b"refused", str(held).encode()]
            flooding = {next_pending(events).session for _ in range(MAX_OPEN_PER_SESSION)}
            listed = json.loads(setup.cli("approvals", "--json").stdout)
            assert len(listed) == MAX_OPEN_PER_SESSION
            assert {a["session"] for a in listed} == flooding
            # Another session of the same profile is still asked about, not refused.
            other = setup.launch(profile, "/after-the-flood")
            pending = next_pending(events)
            assert pending.session not in flooding
            assert pending.host == "api.example.test"
            assert setup.cli("deny", pending.id).returncode == 0
            other.communicate(timeout=60)
        finally:
            flooder.kill()
            flooder.wait(60)
    limited = [e for e in setup.audit() if e["type"] == "approval"
               and e.get("decider") == "limit"]
    assert len(limited) == held


def _pending(uid: int, n: int) -> Pending:
    now = dt.datetime.now(dt.UTC)
    return Pending(id=f"ap-{uid}-{n}", session_id=f"s{uid}-{n}", session_name="x",
                   owner_uid=uid, mode="connect", host="h.example", port=443, method="",
                   path="", pid=1, command=(), backend="queue", created=now, expires=now)


def test_one_user_cannot_take_every_place_in_the_daemons_queue() -> None:
    queue = ApprovalQueue(max_pending=8, max_per_uid=3)
    mine = [_pending(1000, n) for n in range(3)]
    for pending in mine:
        queue.add(pending)
    with pytest.raises(ApprovalLimit):
        queue.add(_pending(1000, 3))
    queue.add(_pending(1001, 0))  # another user still has room
    queue.remove(mine[0])
    queue.add(_pending(1000, 4))  # a freed place is the user's again


def test_a_few_users_cannot_take_every_place_in_the_daemons_queue() -> None:
    """Users at their own caps filled the queue together (1,024 places, 256 each: four of
    them), and every other user's approvals were refused. Now a user with few places taken
    still gets one, up to twice the queue's size in all."""
    queue = ApprovalQueue(max_pending=8, max_per_uid=3)
    for uid, count in ((1000, 3), (1001, 3), (1002, 2)):  # every shared place
        for n in range(count):
            queue.add(_pending(uid, n))
    queue.add(_pending(1003, 0))  # before: ApprovalLimit
    with pytest.raises(ApprovalLimit):
        queue.add(_pending(1000, 3))  # a user at its own cap is still held to it
