"""Red team, the host's ephemeral ports spent by the system daemon for one user. Each
connection a session's proxy serves may hold an upstream connection: a socket of the
daemon's in the host's network namespace, on one of the host's ephemeral ports (28,232
here), and towards one address and port no more connections than that can exist at once,
from any program. A proxy serves 256 connections per session and a user may run 256 sessions:
about 111 of one user's sessions holding idle tunnels to one allowed host took every port
towards it, and every other user (and the host's own programs) could no longer connect
there. Now one uid's sessions, all proxies together, hold at most a share of the range (an
eighth); this test lowers the share to see it without 28,000 connections."""

from __future__ import annotations

import ast
import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

SHARE = 6

#: Opens N tunnels through the proxy to sink.test, prints how they were answered, holds them.
FLOOD = r'''
import base64, os, socket, sys, time
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
held, answers = [], {}
for _ in range(int(sys.argv[1])):
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
    s.sendall(f"CONNECT sink.test:443 HTTP/1.1\r\nHost: sink.test:443\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    status = s.recv(200).split(b"\r\n")[0].decode().split(" ")[1]
    answers[status] = answers.get(status, 0) + 1
    held.append(s)
print("ANSWERS", repr(answers), flush=True)
time.sleep(600)
'''


@pytest.fixture
def setting(short_tmp: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon whose users' share is SHARE connections, two real users, and a host
    service at sink.test that never accepts (the kernel's queue holds the connections)."""
    import nonod.proxy

    monkeypatch.setattr(nonod.proxy, "uid_share_cap", lambda: SHARE)
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(64)
        pin = f'[network]\nresolve = {{ "sink.test" = "127.0.0.1:{sink.getsockname()[1]}" }}\n'
        with shared_daemon(short_tmp, 2, more=pin) as made:
            yield made


def _tunnels(handle: DaemonThread, user: LocalUser, name: str, count: int) -> dict[str, int]:
    """A session of ``user`` that opens ``count`` tunnels and holds them: how they were
    answered (status code: how many)."""
    work = workdir(user)
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-c", FLOOD, str(count)],
              "cwd": str(work), "env": session_env(work), "detach": True, "stdio": "pty",
              "name": name, "options": {"allow_cwd": True, "allow_domain": ["sink.test"]}}
    reply = json.loads(raw_client(handle.socket, [hello(), launch], prefix=user.prefix())[1])
    assert reply["type"] == "launched", reply
    deadline = time.monotonic() + 60
    while True:  # its output, once it has printed how it went
        logs = json.loads(raw_client(handle.socket, [hello(), {"type": "logs", "session": name}],
                                     prefix=user.prefix())[1])
        text = base64.b64decode(logs["data"]).decode() if logs["type"] == "output" else ""
        if "ANSWERS" in text:
            answers: dict[str, int] = ast.literal_eval(text.split("ANSWERS", 1)[1].strip())
            return answers
        assert time.monotonic() < deadline, f"session {name} never said: {logs}"


def test_one_users_sessions_hold_at_most_their_share_of_upstream_connections(
        setting: tuple[DaemonThread, list[LocalUser]]) -> None:
    handle, (victim, attacker) = setting
    names = {attacker: ("hog1", "hog2", "hog3"), victim: ("mine",)}
    try:
        assert _tunnels(handle, attacker, "hog1", 4) == {"200": 4}
        # Its second session reaches the share: the rest are refused (before: all 200).
        assert _tunnels(handle, attacker, "hog2", 4) == {"200": SHARE - 4, "503": 8 - SHARE}
        # Another user's session still connects, while the first one's tunnels are held.
        assert _tunnels(handle, victim, "mine", 4) == {"200": 4}
        # A session that ends gives its connections back to its user's share.
        stopped = json.loads(raw_client(handle.socket, [hello(), {
            "type": "stop", "session": "hog1", "force": True}], prefix=attacker.prefix())[1])
        assert stopped["type"] == "exited", stopped
        assert _tunnels(handle, attacker, "hog3", 4) == {"200": 4}
    finally:
        for user, sessions in names.items():
            for name in sessions:
                raw_client(handle.socket, [hello(), {"type": "stop", "session": name,
                                                     "force": True}], prefix=user.prefix())
