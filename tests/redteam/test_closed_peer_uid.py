"""Red team, a loopback peer taken for root once it has closed: the daemon asks the kernel who
holds the other end of a TCP connection on the host's loopback (``sock_diag``) for a session's
proxy there (only the session's uid may use it), a forwarded port's places and the metrics
endpoint's. A client that sends its request and closes at once leaves, by the time the daemon
accepts, only the kernel's leftover of its socket (``FIN_WAIT2`` or ``TIME_WAIT`` after
``close``), which the kernel reports with uid 0 whoever it was. Another user who had read a
root session's phantom token (programs put it on command lines) sent a request to that
session's proxy and closed: the proxy took the peer for root, the session's owner, and
forwarded the request with root's real credential (blind: nobody reads the answer, but the
request is made). Now a peer whose socket is gone has no uid (``tcp_peer_uid`` raises), and is
never taken for anyone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonod._loopback_peers import tcp_peer_uid
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import FIND_TOKEN, RecordingUpstream, route_profile, shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

MARKER = "nono-rt17-marker"
TRIES = 200

#: Another user's side: find the session's shell by its command line, take the token and the
#: route's address from it, and send a request to PATH TRIES times, closing each connection at
#: once (nobody reads an answer) unless READ is given. Prints how many were sent.
BLIND = FIND_TOKEN + r"""
import socket, urllib.parse
path, tries, read = sys.argv[2], int(sys.argv[3]), len(sys.argv) > 4
base = urllib.parse.urlsplit(base)
request = (f"GET {base.path.rstrip('/')}{path} HTTP/1.1\r\nHost: {base.netloc}\r\n"
           f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n").encode()
sent = 0
for _ in range(tries):
    with socket.create_connection((base.hostname, base.port)) as sock:
        sock.sendall(request)
        while read and sock.recv(4096):
            pass
    sent += 1
print("SENT", sent)
"""


@pytest.fixture
def setting(short_tmp: Path, upstream: int) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    with shared_daemon(short_tmp, 1, more=(
            '[sessions]\nallow_root = true\n'
            f'[network]\nresolve = {{ "localhost" = "127.0.0.1:{upstream}" }}\n')) as setting:
        yield setting


def test_another_user_cannot_send_blind_requests_through_roots_loopback_proxy(
        setting: tuple[DaemonThread, list[LocalUser]], short_tmp: Path, upstream: int) -> None:
    handle, (thief,) = setting
    work = short_tmp / "rootwork"
    work.mkdir()
    profile = route_profile(short_tmp, upstream, "ROOTS-REAL-SECRET", allow_root=True)
    launch = {"type": "launch", "argv": ["/bin/sh", "-c",
                                         'exec /bin/sh -c "while :; do sleep 1; done" '
                                         f'{MARKER} "$SVC_TOKEN" "$SVC_BASE_URL"'],
              "cwd": str(work), "env": session_env(work), "profile": str(profile),
              "detach": True, "stdio": "null", "name": "rootagent"}
    replies = raw_client(handle.socket, [hello(), launch])
    assert json.loads(replies[1])["type"] == "launched", replies
    try:
        done = subprocess.run([*thief.prefix(), SYSTEM_PYTHON, "-c", BLIND, MARKER, "/blind",
                               str(TRIES)],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert done.stdout.startswith("SENT"), done.stdout + done.stderr
        # Whatever the proxy was still about to do with them is done by the time a request of
        # root's own is answered through the same proxy (connections are taken in order).
        mine = subprocess.run([SYSTEM_PYTHON, "-c", BLIND, MARKER, "/mine", "1", "read"],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert mine.stdout.startswith("SENT"), mine.stdout + mine.stderr
        assert "/mine Bearer ROOTS-REAL-SECRET" in RecordingUpstream.seen
        # Before: most of the thief's requests reached the upstream with root's secret.
        assert [seen for seen in RecordingUpstream.seen if seen.startswith("/blind")] == []
    finally:
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "rootagent",
                                             "force": True}])


def test_a_peer_that_has_closed_has_no_uid() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with conn:
            assert tcp_peer_uid(conn) == os.geteuid()
            client.close()
            # The kernel's leftover of the closed socket says uid 0 whoever held it.
            with pytest.raises(OSError):
                tcp_peer_uid(conn)
