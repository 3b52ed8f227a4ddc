"""Red team, twenty-ninth pass: the part of the daemon's descriptor table sessions' traffic
may use (``nonod/_descriptors.py``: everything below the reserve) is one pool for every user
of a system daemon. Each connection a session's program holds through its proxy costs the
daemon two descriptors (two more for a tunnel copying in bulk), and one user's session
holding tunnels took the whole pool: every other user's sessions then had each new tunnel
refused (``502``) for as long as that user held on, their agents cut off from their APIs.
Each uid's share of proxy connections (``nonod/proxy/_share.py``, bounded by the host's
ephemeral ports until now) is now also bounded by half of that part of the table, at six
descriptors a connection: past it the user's own next connection is ``503``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import hello, raw_client, session_env, wait_pid_gone
from tests.daemon.localusers import LocalUser, local_users, socket_group
from tests.daemon.test_cli import REPO
from tests.redteam.conftest import free_port, hold_tcp

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="useradd, a system daemon")]

#: Opens N tunnels through the session's proxy, writes how it went to ``tunnels``, holds them.
TUNNELS = r'''
import base64, os, socket, sys, time
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
held, answers = [], {}
for _ in range(int(sys.argv[1])):
    try:
        s = socket.create_connection((proxy.hostname, proxy.port), timeout=3)
        s.sendall(f"CONNECT sink.test:443 HTTP/1.1\r\nHost: sink.test:443\r\n"
                  f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
        line = s.recv(200).split(b"\r\n")[0].decode() or "closed"
    except OSError as exc:
        line = type(exc).__name__
    answers[line] = answers.get(line, 0) + 1
    held.append(s)
with open("tunnels.tmp", "w") as f:
    f.write(repr(answers))
os.rename("tunnels.tmp", "tunnels")
time.sleep(float(sys.argv[2]))
'''


#: Listens inside the session (its listen port) and holds every connection for a while.
SERVER = r'''
import socket, sys, threading, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(1024)
held = []
def serve():
    while True:
        held.append(server.accept()[0])
threading.Thread(target=serve, daemon=True).start()
open("listening", "w").close()
time.sleep(120)
'''


class SystemNonod:
    """A system ``nonod`` under ``prlimit --nofile=LIMIT:LIMIT`` serving ``users``."""

    def __init__(self, base: Path, limit: int, sink_port: int) -> None:
        self.socket = base / "run" / "nonod.sock"
        config = base / "nonod.toml"
        config.write_text(
            f'[daemon]\nsocket = "{self.socket}"\nstate_dir = "{base / "state"}"\n'
            f'socket_group = "{socket_group()}"\n'
            f'[network]\nresolve = {{ "sink.test" = "127.0.0.1:{sink_port}" }}\n')
        env = {**session_env(base), "NONO_NO_AUTOSTART": "1", "PYTHONPATH": str(REPO)}
        started = subprocess.run(
            ["prlimit", f"--nofile={limit}:{limit}", sys.executable, "-m", "nonod", "--system",
             "--daemonize", "--config", str(config)],
            env=env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
        assert started.returncode == 0, started.stderr
        welcome = json.loads(raw_client(self.socket, [hello()])[0])
        self.pid = int(welcome["pid"])

    def stop(self) -> None:
        raw_client(self.socket, [hello(), {"type": "shutdown"}])
        if not wait_pid_gone(self.pid, timeout=30):
            os.kill(self.pid, 9)


@pytest.fixture
def sink() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        yield listener.getsockname()[1]


@pytest.fixture
def shared(short_tmp: Path, sink: int) -> Iterator[tuple[SystemNonod, list[LocalUser]]]:
    with local_users(short_tmp, 2) as users:
        daemon = SystemNonod(short_tmp, 640, sink)  # 384 for sessions' traffic
        try:
            yield daemon, users
        finally:
            daemon.stop()


def _work(user: LocalUser) -> Path:
    user.home.chmod(0o755)
    work = user.home / "work"
    work.mkdir()
    (work / "tunnels.py").write_text(TUNNELS)
    (work / "server.py").write_text(SERVER)
    for path in (work, *work.iterdir()):
        os.chown(path, user.uid, user.gid)
    return work


def _tunnels(daemon: SystemNonod, user: LocalUser, work: Path, name: str, count: int,
             hold: float) -> dict[str, int]:
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-S", "tunnels.py", str(count),
                                         str(hold)],
              "cwd": str(work), "env": session_env(work), "detach": True, "stdio": "null",
              "name": name, "options": {"allow_cwd": True, "allow_domain": ["sink.test"]}}
    reply = json.loads(raw_client(daemon.socket, [hello(), launch], prefix=user.prefix())[1])
    assert reply["type"] == "launched", reply
    done = work / "tunnels"
    deadline = time.monotonic() + 60
    while not done.exists():
        assert time.monotonic() < deadline, f"{name} opened no tunnels in time"
        time.sleep(0.1)
    answers: dict[str, int] = eval(done.read_text())  # noqa: S307 - our own repr of a dict
    done.unlink()
    return answers


def test_one_users_tunnels_do_not_close_another_users_proxy_connections(
        shared: tuple[SystemNonod, list[LocalUser]]) -> None:
    daemon, (victim, hoarder) = shared
    hoarded = _tunnels(daemon, hoarder, _work(hoarder), "hoard", 256, 120)
    # 384 descriptors for sessions' traffic: 32 connections for one uid (before: 174 held,
    # and the rest 502 once the pool was full).
    assert hoarded.get("HTTP/1.1 200 Connection established", 0) == 32, hoarded
    assert hoarded.get("HTTP/1.1 503 Service Unavailable", 0) > 100, hoarded
    mine = _tunnels(daemon, victim, _work(victim), "mine", 1, 0)
    assert mine == {"HTTP/1.1 200 Connection established": 1}, (mine, hoarded)  # before: 502


def test_one_users_connections_to_its_forwards_do_not_close_another_users_either(
        shared: tuple[SystemNonod, list[LocalUser]]) -> None:
    """The same pool through a session's forwarded port: each connection from the host
    holds two of the daemon's descriptors, and counts in its peer's share."""
    daemon, (victim, hoarder) = shared
    work, port = _work(hoarder), free_port()
    launch = {"type": "launch", "argv": ["/usr/bin/python3", "-S", "server.py", str(port)],
              "cwd": str(work), "env": session_env(work), "detach": True, "stdio": "null",
              "name": "server", "options": {"allow_cwd": True, "block_net": True,
                                            "listen_ports": [port]}}
    reply = json.loads(raw_client(daemon.socket, [hello(), launch], prefix=hoarder.prefix())[1])
    assert reply["type"] == "launched", reply
    deadline = time.monotonic() + 60
    while not (work / "listening").exists():
        assert time.monotonic() < deadline, "the session's server did not start"
        time.sleep(0.1)
    holder = hold_tcp(hoarder, port, 256)  # before: 256 held, and the pool full
    try:
        mine = _tunnels(daemon, victim, _work(victim), "mine", 1, 0)
        assert mine == {"HTTP/1.1 200 Connection established": 1}, mine  # before: 502
    finally:
        holder.communicate("", timeout=60)
