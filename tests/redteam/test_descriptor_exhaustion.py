"""Red team, the daemon's descriptor table: a session's program opens tunnels through its
proxy until the daemon holds two descriptors for each (client and upstream). With the
limit systemd gives a service by default (1024 soft), two such sessions filled the table:
the daemon could no longer accept a control connection, so ``nonoctl ps`` and every launch
of every user timed out for as long as the sessions held on. Now the daemon runs with its
hard limit (sessions keep the one it was started with), and the top of the table is kept
from sessions' traffic (``nonod/_descriptors.py``).

Each test runs a real ``nonod`` under ``prlimit`` (the limit is per process)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import session_env, wait_pid_gone
from tests.daemon.test_cli import REPO

pytestmark = pytest.mark.root

#: Opens tunnels through the proxy, says how it went, holds them until stdin closes.
FLOOD = r'''
import base64, os, socket, sys
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
held, answers = [], {}
for _ in range(int(sys.argv[1])):
    try:
        s = socket.create_connection((proxy.hostname, proxy.port), timeout=3)
        s.sendall(f"CONNECT sink.test:443 HTTP/1.1\r\nHost: sink.test:443\r\n"
                  f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
        line = s.recv(200).split(b"\r\n")[0].decode()
    except OSError as exc:  # the proxy no longer answers: the daemon is out of descriptors
        answers[type(exc).__name__] = 1
        break
    answers[line] = answers.get(line, 0) + 1
    held.append(s)
print(repr(answers), flush=True)
sys.stdin.read()
'''

LIMITS = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"

#: Listens inside the session (its --listen-port), holds every connection until stdin closes.
SERVER = r'''
import socket, sys, threading
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(1024)
held = []
def serve():
    while True:
        held.append(server.accept()[0])
threading.Thread(target=serve, daemon=True).start()
print("listening", flush=True)
sys.stdin.read()
'''


class Nonod:
    """A detached ``nonod`` started under ``prlimit --nofile=SOFT:HARD``."""

    def __init__(self, base: Path, soft: int, hard: int, sink_port: int) -> None:
        self.base = base
        self.work = base / "work"
        self.work.mkdir()
        self.socket = base / "run" / "nonod.sock"
        config = base / "nonod.toml"
        config.write_text(
            f'[daemon]\nsocket = "{self.socket}"\nstate_dir = "{base / "state"}"\n'
            f'[network]\nresolve = {{ "sink.test" = "127.0.0.1:{sink_port}" }}\n')
        self.env = {**session_env(base), "NONO_SOCKET": str(self.socket),
                    "NONO_NO_AUTOSTART": "1", "PYTHONPATH": str(REPO)}
        started = subprocess.run(
            ["prlimit", f"--nofile={soft}:{hard}", sys.executable, "-m", "nonod",
             "--daemonize", "--config", str(config)],
            env=self.env, capture_output=True, text=True, timeout=60, check=False, cwd="/")
        assert started.returncode == 0, started.stderr
        status = self.ctl("daemon", "status", "--json")
        self.pid = int(json.loads(status.stdout)["pid"])

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nonoctl", *args], env=self.env,
                              cwd=self.work, capture_output=True, text=True, timeout=60,
                              check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "nonoctl", *args], env=self.env,
                                cwd=self.work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def soft_limit(self) -> int:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no descriptor limit in /proc/PID/limits")

    def stop(self) -> None:
        self.ctl("daemon", "stop")
        if not wait_pid_gone(self.pid, timeout=30):
            subprocess.run(["kill", "-9", str(self.pid)], check=False)


@pytest.fixture
def sink() -> Iterator[int]:
    """A host service the tunnels lead to: it never accepts, the kernel's queue holds them."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        yield listener.getsockname()[1]


@pytest.fixture
def nonod_factory() -> Iterator[list[Nonod]]:
    started: list[Nonod] = []
    yield started
    for daemon in started:
        daemon.stop()


def _said(launch: subprocess.Popen[str], line: str) -> str:
    """What a ``nonoctl launch`` whose stdout ended (``line`` empty) wrote on stderr; not
    read otherwise (a launch still running would not end it)."""
    return launch.stderr.read() if not line and launch.stderr is not None else ""


def _start(started: list[Nonod], base: Path, soft: int, hard: int, sink: int) -> Nonod:
    base.mkdir()
    daemon = Nonod(base, soft, hard, sink)
    started.append(daemon)
    return daemon


def test_tunnels_never_take_the_descriptors_the_daemon_serves_with(
        short_tmp: Path, sink: int, nonod_factory: list[Nonod]) -> None:
    # A hard limit the daemon cannot raise: only the reserve can keep it serving.
    daemon = _start(nonod_factory, short_tmp / "d", 512, 512, sink)
    (daemon.work / "flood.py").write_text(FLOOD)
    flood = daemon.popen("launch", "--allow-cwd", "--allow-domain", "sink.test", "--",
                         "/usr/bin/python3", "-S", "flood.py", "400")
    try:
        assert flood.stdout is not None
        answers = flood.stdout.readline()  # the tunnels are open and held from here on
        assert "200 Connection established" in answers, (answers, _said(flood, answers))
        listed = daemon.ctl("ps")
        assert listed.returncode == 0, listed.stderr
        other = daemon.ctl("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/true")
        assert other.returncode == 0, other.stderr
    finally:
        flood.communicate("", timeout=60)
    assert flood.returncode == 0, flood.stderr


def test_connections_from_the_host_to_a_listen_port_never_take_them_either(
        short_tmp: Path, sink: int, nonod_factory: list[Nonod]) -> None:
    daemon = _start(nonod_factory, short_tmp / "d", 512, 512, sink)
    (daemon.work / "server.py").write_text(SERVER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = daemon.popen("launch", "--allow-cwd", "--block-net", "--listen-port", str(port),
                          "--", "/usr/bin/python3", "-S", "server.py", str(port))
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        started = server.stdout.readline()
        assert started == "listening\n", (started, _said(server, started))  # CI once: ""
        for _ in range(400):  # any local user can: the forward listens on the host
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        assert len(clients) > 100
        listed = daemon.ctl("ps")
        assert listed.returncode == 0, listed.stderr
        assert "running" in listed.stdout  # before: out of descriptors, the session was ended
    finally:
        for client in clients:
            client.close()
        server.communicate("", timeout=60)
    assert server.returncode == 0, server.stderr


def test_the_daemon_takes_its_hard_limit_and_sessions_keep_the_started_one(
        short_tmp: Path, sink: int, nonod_factory: list[Nonod]) -> None:
    daemon = _start(nonod_factory, short_tmp / "d", 600, 4096, sink)
    assert daemon.soft_limit() == 4096
    inside = daemon.ctl("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/python3",
                        "-S", "-c", LIMITS)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == "(600, 3072)"  # less the launchers' reserve: program_nofile
