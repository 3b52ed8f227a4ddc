"""Red team, thirty-fifth pass: whose connections the system daemon makes for its users.

The system daemon runs as root, and every upstream connection a session's proxy opens is a
socket of the daemon's. The kernel takes a socket's owner from whoever made it, so every
connection any user's session made through its proxy reached its upstream as root's, as
``sock_diag`` (``ss -e``) and an ``-m owner`` firewall rule see it. nono itself takes that
owner for the connecting user on the host's loopback (``nonod/_loopback_peers.py``): a root
session's proxy there admits root's sockets only, the inbound forwards and the metrics
endpoint count each peer uid's connections. Another user's session that reaches a loopback
address the operator pinned (``[network] resolve``) came in as root to all of them: past the
uid check of a root session's proxy, and counted in root's share, not its own.

Found: with a name pinned to the loopback without a port (``"gw.internal" = "127.0.0.1"``:
the request's port is kept), another user's session tunnelled to the port of a root
session's proxy (Landlock network isolation: on the host's loopback), sent root's phantom
token (programs put it on command lines, which every user can read) and had root's real
secret sent to root's upstream: ``200 OK``.

Now a connection the system daemon opens for a session of another user is that user's in
the kernel's view (the socket is made under the user's file system uid): on each of the
proxy's three ways to an upstream (a plain ``CONNECT`` served by the pump thread, a request
forwarded on trio's path, a route's reverse proxy).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from nonod._loopback_peers import tcp_peer_uid
from tests.daemon.conftest import SYSTEM_PYTHON, DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import FIND_TOKEN, RecordingUpstream, route_profile, shared_daemon

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

#: The session's program: one request on each of the proxy's ways to an upstream; writes
#: the first line of each answer to ``answers``.
ASK = r'''
import base64, json, os, socket
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
heads = {
    "connect": "CONNECT sink.test:443 HTTP/1.1\r\nHost: sink.test:443\r\n",
    "forward": "GET http://sink.test/forward HTTP/1.1\r\nHost: sink.test\r\n",
}
answers = {}
for way, head in heads.items():
    with socket.create_connection((proxy.hostname, proxy.port), timeout=20) as s:
        s.sendall(f"{head}Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
        if way == "connect":
            s.recv(200)
            s.sendall(b"GET /tunnel HTTP/1.1\r\nHost: sink.test\r\n\r\n")
        answers[way] = s.recv(200).split(b"\r\n")[0].decode()
base = urlsplit(os.environ["SVC_BASE_URL"])
with socket.create_connection((base.hostname, base.port), timeout=20) as s:
    s.sendall(f"GET {base.path}/route HTTP/1.1\r\nHost: {base.hostname}\r\n"
              f"Authorization: Bearer {os.environ['SVC_TOKEN']}\r\n\r\n".encode())
    answers["route"] = s.recv(200).split(b"\r\n")[0].decode()
with open("answers.tmp", "w") as f:
    json.dump(answers, f)
os.rename("answers.tmp", "answers")
'''


class OwnerRecorder:
    """A loopback service the operator pinned: records, for each request it gets, the path
    and the uid owning the peer's socket (the kernel's ``sock_diag``), and answers ``200``."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.seen: dict[str, int] = {}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    owner = tcp_peer_uid(conn)
                    conn.settimeout(20)
                    head = conn.recv(4096).split(b" ")
                    self.seen[head[1].decode().rsplit("/", 1)[-1]] = owner
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                except (OSError, IndexError):
                    continue


@pytest.fixture
def recorder() -> Iterator[OwnerRecorder]:
    served = OwnerRecorder()
    yield served
    served.listener.close()


@pytest.fixture
def setting(short_tmp: Path, recorder: OwnerRecorder
            ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    pins = f'"sink.test" = "127.0.0.1:{recorder.port}", "localhost" = "127.0.0.1:{recorder.port}"'
    with shared_daemon(short_tmp, 1, more=f"[network]\nresolve = {{ {pins} }}\n") as setting:
        yield setting


def _work(user: LocalUser) -> tuple[Path, Path]:
    """The user's working directory with ``ASK`` in it, and a profile with one route to
    the pinned service whose secret is a 0600 file of the user's."""
    user.home.chmod(0o755)
    work = user.home / "work"
    work.mkdir()
    (work / "ask.py").write_text(ASK)
    token = user.home / "token"
    token.write_text("THE-USERS-SECRET")
    token.chmod(0o600)
    profile = user.home / "route.json"
    profile.write_text(json.dumps({
        "meta": {"name": "route"},
        "network": {"credentials": ["svc"], "custom_credentials": {"svc": {
            "upstream": "http://localhost:80", "credential_key": f"file://{token}",
            "env_var": "SVC_TOKEN"}}},
    }))
    for path in (work, *work.iterdir(), token, profile):
        os.chown(path, user.uid, user.gid)
    return work, profile


def test_a_users_upstream_connections_are_the_users_not_the_daemons(
        setting: tuple[DaemonThread, list[LocalUser]], recorder: OwnerRecorder) -> None:
    handle, (user,) = setting
    work, profile = _work(user)
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-S", "ask.py"],
              "cwd": str(work), "env": session_env(work), "profile": str(profile),
              "detach": True, "stdio": "null", "name": "ask",
              "options": {"allow_cwd": True, "allow_domain": ["sink.test"]}}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": "ask"}],
                       prefix=user.prefix(), timeout=90)
    assert json.loads(lines[1])["type"] == "launched", lines
    answers = json.loads((work / "answers").read_text())
    assert answers == {"connect": "HTTP/1.1 200 OK", "forward": "HTTP/1.1 200 OK",
                       "route": "HTTP/1.1 200 OK"}, (answers, lines)
    deadline = time.monotonic() + 10
    while len(recorder.seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    # before: {"tunnel": 0, "forward": 0, "route": 0}, root's
    assert recorder.seen == {"tunnel": user.uid, "forward": user.uid, "route": user.uid}


#: Another user's session: through its own proxy, a tunnel to a name the operator pinned to
#: the loopback (``loop.test``), on the port of root's session's proxy; there, root's route
#: asked with root's token (taken from its command line, as ``test_host_proxy_peers``).
STEAL = r'''
import base64, json, os, socket, sys
from urllib.parse import urlsplit
token, path, port = sys.argv[1], sys.argv[2], sys.argv[3]
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
with socket.create_connection((proxy.hostname, proxy.port), timeout=20) as s:
    s.sendall(f"CONNECT loop.test:{port} HTTP/1.1\r\nHost: loop.test:{port}\r\n"
              f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    tunnel = s.recv(200).split(b"\r\n")[0].decode()
    s.sendall(f"GET {path}/stolen HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
              f"Authorization: Bearer {token}\r\n\r\n".encode())
    try:
        answer = s.recv(200).split(b"\r\n")[0].decode() or "closed"
    except OSError as exc:
        answer = type(exc).__name__
with open("stolen.tmp", "w") as f:
    json.dump({"tunnel": tunnel, "answer": answer}, f)
os.rename("stolen.tmp", "stolen")
'''

MARKER = "nono-rt35-marker"


@pytest.fixture
def roots_setting(short_tmp: Path, upstream: int
                  ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    # The operator pins a local gateway's name to the loopback, the port the request's.
    pins = f'"localhost" = "127.0.0.1:{upstream}", "loop.test" = "127.0.0.1"'
    with shared_daemon(short_tmp, 1, more=(f"[network]\nresolve = {{ {pins} }}\n"
                                           "[sessions]\nallow_root = true\n")) as setting:
        yield setting


def test_another_users_session_cannot_reach_a_root_sessions_proxy_as_root(
        roots_setting: tuple[DaemonThread, list[LocalUser]], upstream: int,
        short_tmp: Path) -> None:
    handle, (thief,) = roots_setting
    mine = short_tmp / "root-session"
    mine.mkdir()
    profile = route_profile(mine, upstream, "ROOTS-REAL-SECRET", allow_root=True)
    launch = {"type": "launch", "argv": ["/bin/sh", "-c",
                                         'exec /bin/sh -c "while :; do sleep 1; done" '
                                         f'{MARKER} "$SVC_TOKEN" "$SVC_BASE_URL"'],
              "cwd": str(mine), "env": session_env(mine), "profile": str(profile),
              "detach": True, "stdio": "null", "name": "roots"}
    replies = raw_client(handle.socket, [hello(), launch])
    assert json.loads(replies[1])["type"] == "launched", replies
    try:
        found = subprocess.run(
            [*thief.prefix(), SYSTEM_PYTHON, "-c", FIND_TOKEN + "print(token, base)", MARKER],
            capture_output=True, text=True, timeout=60, cwd="/")
        token, base = found.stdout.split()
        where = urlsplit(base)
        work = thief.home / "work"
        thief.home.chmod(0o755)
        work.mkdir()
        (work / "steal.py").write_text(STEAL)
        theirs = thief.home / "loop.json"
        theirs.write_text(json.dumps({"meta": {"name": "loop"}, "network": {
            "allow_domain": ["loop.test"], "open_port": [where.port]}}))
        for path in (work, work / "steal.py", theirs):
            os.chown(path, thief.uid, thief.gid)
        steal = {"type": "launch", "argv": ["/usr/bin/python3", "-S", "steal.py", token,
                                            where.path, str(where.port)],
                 "cwd": str(work), "env": session_env(work), "profile": str(theirs),
                 "detach": True, "stdio": "null", "name": "steal",
                 "options": {"allow_cwd": True}}
        lines = raw_client(handle.socket, [hello(), steal, {"type": "wait", "session": "steal"}],
                           prefix=thief.prefix(), timeout=90)
        assert json.loads(lines[1])["type"] == "launched", lines
        stolen = json.loads((work / "stolen").read_text())
        assert stolen["tunnel"] == "HTTP/1.1 200 Connection established", stolen
        # before: HTTP/1.1 200 OK, and the upstream got root's real secret
        assert stolen["answer"] in ("closed", "ConnectionResetError"), stolen
        assert not any("ROOTS-REAL-SECRET" in seen for seen in RecordingUpstream.seen)
    finally:
        raw_client(handle.socket, [hello(), {"type": "stop", "session": "roots",
                                             "force": True}])
