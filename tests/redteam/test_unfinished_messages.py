"""Red team, the system daemon's memory held by one user's unfinished messages: a control
message may be up to ``max_message_bytes`` (1 MiB), and the daemon keeps what has arrived of
one until it is complete. A member of the socket group opened its share of connections and
sent each all but the last bytes of a 1 MiB message: about 1 MiB of the daemon's memory per
connection (128 MiB per user, the whole ``max_connections`` 256 MiB), held for as long as the
connections stay open. Now what the daemon has read from one uid's connections and not yet
taken as requests is bounded per uid (four messages' worth); beyond it, that uid's
connections are not read until it drops."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import client_dir, rss

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

MIB = 1 << 20

#: Opens N connections; on each, says hello, then starts a message of almost 1 MiB. Sends
#: as much of them as the daemon takes (until nothing moves for 2 s), prints the bytes sent,
#: then holds the connections open until its stdin closes.
HOARDER = r"""
import select, struct, sys
sys.path.insert(0, sys.argv[1])
from rawclient import welcomed
path, count, size = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = b'{"type": "status", "pad": "' + b"a" * size
left = {}
for _ in range(count):
    sock, _ = welcomed(path)
    sock.setblocking(False)
    # a text frame that is not the message's last, with a zero mask: the payload as it is
    left[sock] = memoryview(bytes([0x01, 0x80 | 127]) + struct.pack("!Q", len(body) + 2)
                            + b"\0\0\0\0" + body)
held, sent = list(left), 0
while left:
    _, ready, _ = select.select([], list(left), [], 2)
    if not ready:
        break
    for sock in ready:
        n = sock.send(left[sock][:65536])
        sent += n
        left[sock] = left[sock][n:]
        if not left[sock]:
            del left[sock]
print(sent, flush=True)
sys.stdin.read()
"""


def test_one_users_unfinished_messages_hold_little_of_the_daemons_memory(
        two_users: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (hoarder, bystander) = two_users
    # (the daemon runs in this process: its memory is this process's)
    before = rss()
    proc = subprocess.Popen([*hoarder.prefix(), SYSTEM_PYTHON, "-c", HOARDER, client_dir(),
                             str(handle.socket), "64", str(MIB - 4096)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert proc.stdout is not None
        sent = int(proc.stdout.readline())  # before: ~64 MiB, all of it read
        assert sent > 4 * MIB  # more than the budget: the attack was made
        status = raw_client(handle.socket, [hello(), {"type": "status"}],
                            prefix=bystander.prefix())
        assert json.loads(status[-1])["type"] == "daemon_status"  # others are served
        grown = rss() - before
        assert grown < 16 * MIB, f"the daemon grew by {grown >> 20} MiB ({sent >> 20} sent)"
    finally:
        proc.communicate(timeout=30)
    # Once the hoarder has gone, what it held is released: its uid is served again.
    again = raw_client(handle.socket, [hello(), {"type": "status"}], prefix=hoarder.prefix())
    assert json.loads(again[-1])["type"] == "daemon_status"
