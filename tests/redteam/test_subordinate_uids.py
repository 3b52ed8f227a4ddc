"""Red team, one local user as many uids: the system daemon's shares are per uid (connections
held, new connections per second, unread request bytes), and a user with subordinate ids
(``/etc/subuid``, which ``useradd`` fills for every regular user on Debian and Ubuntu) can run
processes under thousands of host uids through ``newuidmap`` (``unshare --map-users``) in a
user namespace of its own, in the host's network and mount namespaces, and with its own group
(the socket group, when that is its group). Such processes are refused at the peer check (their
user namespace is not the host's), but only after the daemon admitted them by their uid: one
member of the socket group holding connections under 8 subordinate uids took every place the
per-uid reserve keeps for other users, and another user got ``daemon.too_many_connections``.
Now a peer in a user namespace below the daemon's is counted as the uid that made the
outermost of those namespaces (``peer_uid`` in ``nonod/control/_peers.py``). The metrics
endpoint's places (per TCP peer uid, from ``sock_diag``) were taken the same way by 4
subordinate uids; a subordinate uid now counts as its user there (``nonod/_subids.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._subids import owner_of
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import free_port, shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: Subordinate uids the attacker is given, and how many it connects under.
FIRST_SUBUID = 330000
SUBUIDS = 8
PER_SUBUID = 2

#: Runs inside the attacker's user namespace (uids 1.. are its subordinate ids): under each
#: of the first N uids opens K connections that send nothing, to the Unix socket PATH or to
#: 127.0.0.1:PATH when it is a number; prints "held" once all are open, and holds them until
#: its stdin closes.
HOLDER = r"""
import os, socket, sys
path, uids, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def connect():
    if path.isdigit():
        return socket.create_connection(("127.0.0.1", int(path)))
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock
ready_r, ready_w = os.pipe()
release_r, release_w = os.pipe()
for uid in range(1, uids + 1):
    if os.fork() == 0:
        os.close(release_w)
        os.setresuid(uid, uid, uid)
        held = []
        for _ in range(each):
            held.append(connect())
        os.write(ready_w, b"x")
        os.read(release_r, 1)
        os._exit(0)
os.close(release_r)
got = 0
while got < uids:
    got += len(os.read(ready_r, uids))
print("held", flush=True)
sys.stdin.read()
os.close(release_w)
for _ in range(uids):
    os.wait()
"""


METRICS_PORT = free_port()


@pytest.fixture
def setting(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    with shared_daemon(short_tmp, 2, daemon=(
            "max_connections = 8\nmax_connections_per_uid = 2\nhandshake_timeout = 60\n"
    ), more=f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{METRICS_PORT}"\n'
    ) as (handle, users):
        attacker = users[1]
        last = FIRST_SUBUID + 99
        subprocess.run(["usermod", "--add-subuids", f"{FIRST_SUBUID}-{last}",
                        "--add-subgids", f"{FIRST_SUBUID}-{last}", attacker.name], check=True)
        yield handle, users


def _hold(attacker: LocalUser, target: str, uids: int, each: int) -> subprocess.Popen[str]:
    """HOLDER in ``attacker``'s user namespace of its subordinate ids, once it holds."""
    holder = subprocess.Popen(
        [*attacker.prefix(), "unshare", f"--map-users={FIRST_SUBUID},1,100", "--map-user=0",
         "--map-group=0", SYSTEM_PYTHON, "-c", HOLDER, target, str(uids), str(each)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def _status_of(handle: DaemonThread, user: LocalUser) -> dict[str, object]:
    lines = raw_client(handle.socket, [hello(), {"type": "status"}], prefix=user.prefix())
    return dict(json.loads(lines[-1] if lines[-1].startswith("{") else lines[0]))


def test_one_user_under_many_subordinate_uids_does_not_take_every_place(
        setting: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (victim, attacker) = setting
    holder = _hold(attacker, str(handle.socket), SUBUIDS, PER_SUBUID)
    try:
        # Accepted in order: the attacker's connections were all judged before this one.
        reply = _status_of(handle, victim)
        # Before: {"type": "error", "code": "daemon.too_many_connections", ...}
        assert reply["type"] == "daemon_status", reply
    finally:
        holder.communicate("", timeout=60)


def test_one_user_under_many_subordinate_uids_does_not_take_the_metrics_places(
        setting: tuple[DaemonThread, list[LocalUser]]) -> None:
    _, (_, attacker) = setting
    holder = _hold(attacker, str(METRICS_PORT), 4, 4)  # 16 places, 4 per uid
    try:
        # Root (the scraper) is answered. Before: the connection was closed unanswered.
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
    finally:
        holder.communicate("", timeout=60)


def test_a_subordinate_uid_counts_as_its_user(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("root:100000:65536\n# not a range\nnobody-such-user:5:5\n1234:200000:10\n")
    assert owner_of(100000, str(table)) == owner_of(165535, str(table)) == 0
    assert owner_of(165536, str(table)) == 165536
    assert owner_of(200009, str(table)) == 1234 and owner_of(200010, str(table)) == 200010
    assert owner_of(7, str(table)) == 7  # a line naming no user is left out
    assert owner_of(7, str(tmp_path / "absent")) == 7
