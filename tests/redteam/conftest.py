"""The red team's tests drive a real daemon as the daemon tests do: their fixtures, reused,
``run`` (``nonoctl`` against a user daemon of the test's own uid), and for the attacks by
other local users a system daemon whose socket group holds fresh real users."""

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon.conftest import (
    SYSTEM_PYTHON,
    DaemonThread,
    daemon_thread,
    hello,
    raw_client,
    reachable_script,
    session_env,
    short_tmp,
)
from tests.daemon.localusers import LocalUser, local_users, socket_group
from tests.daemon.test_caller_files import system_daemon
from tests.daemon.test_cli import CLI, cli_env

__all__ = ["daemon_thread", "metrics_daemon", "run", "short_tmp", "system_daemon", "two_users",
           "upstream"]


@pytest.fixture
def run(daemon_thread: DaemonThread, short_tmp: Path) -> CLI:
    return CLI(cli_env(daemon_thread.socket, short_tmp), short_tmp)


@contextmanager
def shared_daemon(base: Path, users: int, *, daemon: str = "", more: str = ""
                  ) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon (``[daemon]`` plus ``daemon``'s lines, then ``more``) whose socket
    group holds ``users`` fresh real users; gone afterwards."""
    with local_users(base, users) as made:
        handle = DaemonThread(base, system=True, config=(
            f'[daemon]\nsocket_group = "{socket_group()}"\n{daemon}{more}')).start()
        try:
            yield handle, made
        finally:
            handle.stop()


@pytest.fixture
def two_users(short_tmp: Path) -> Iterator[tuple[DaemonThread, list[LocalUser]]]:
    """A system daemon and two fresh real users of its socket group."""
    with shared_daemon(short_tmp, 2) as setting:
        yield setting


def workdir(user: LocalUser) -> Path:
    """``user``'s home opened to others (0755) and a working directory of its own in it."""
    import os

    user.home.chmod(0o755)
    work = user.home / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, user.uid, user.gid)
    return work


def rss() -> int:
    """This process's resident memory (the daemon of these tests runs in it), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


#: Another user's side of a TCP flood: opens N connections to 127.0.0.1:PORT that send
#: nothing; then one more, which the server closes once it has taken the others in (servers
#: take connections in order); prints "held", then holds them all until its stdin closes.
TCP_HOLDER = r"""
import socket, sys
address = ("127.0.0.1", int(sys.argv[1]))
held = [socket.create_connection(address) for _ in range(int(sys.argv[2]))]
with socket.create_connection(address) as probe:
    probe.settimeout(30)
    assert probe.recv(1) == b""
print("held", flush=True)
sys.stdin.read()
"""


def hold_tcp(user: LocalUser, port: int, count: int) -> subprocess.Popen[str]:
    """``TCP_HOLDER`` run as ``user``, once it holds its connections (close its stdin, or
    ``communicate()``, to let them go)."""
    holder = subprocess.Popen([*user.prefix(), SYSTEM_PYTHON, "-c", TCP_HOLDER, str(port),
                               str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd="/")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def client_dir() -> str:
    """Where ``rawclient.py`` sits, readable by every uid: the scripts run as other users
    import its WebSocket helpers from there."""
    return str(reachable_script("rawclient.py").parent)


def bare_accept_and_close(count: int, unix_dir: Path | None = None) -> float:
    """This machine's CPU time, now, for COUNT connections made, accepted and closed in a plain
    loop, both ends in this process (loopback TCP, or a Unix socket in UNIX_DIR): the unit a
    test measures the daemon's cost for as many connections in, so that a slower or busier
    machine does not read as a regression."""
    family = socket.AF_UNIX if unix_dir is not None else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind(str(unix_dir / "bare.sock") if unix_dir is not None else ("127.0.0.1", 0))
        listener.listen(64)
        address = listener.getsockname()
        cpu = time.process_time()
        for _ in range(count):
            with socket.socket(family) as client:
                client.connect(address)
                listener.accept()[0].close()
        spent = time.process_time() - cpu
    if unix_dir is not None:
        (unix_dir / "bare.sock").unlink()
    return spent


def free_port() -> int:
    """A TCP port of the loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metrics_daemon(short_tmp: Path) -> Iterator[tuple[DaemonThread, LocalUser, int]]:
    """A system daemon serving its metrics on a loopback port, one real user, the port."""
    port = free_port()
    with shared_daemon(short_tmp, 1, more=(
            f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{port}"\n')) as (handle, users):
        yield handle, users[0], port


class RecordingUpstream(http.server.BaseHTTPRequestHandler):
    """A route's upstream: answers every GET with ``ok``, keeping its path and credential."""

    seen: list[str] = []

    def do_GET(self) -> None:
        RecordingUpstream.seen.append(f"{self.path} {self.headers.get('Authorization')}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    """A RecordingUpstream on a loopback port (its ``seen`` emptied), the port."""
    RecordingUpstream.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def route_profile(directory: Path, upstream: int, secret: str, *,
                  owner: LocalUser | None = None, allow_root: bool = False) -> Path:
    """A profile in ``directory``: Landlock network isolation (the session's proxy on the
    host's loopback), one route to the local ``upstream`` whose secret is ``secret`` in a
    0600 file of ``owner``'s (root's without one)."""
    token = directory / "token"
    token.write_text(secret)
    token.chmod(0o600)
    profile = directory / "landlock.json"
    nonod: dict[str, object] = {"allow_degraded": ["network_ports"]}
    if allow_root:
        nonod["allow_root"] = True
    profile.write_text(json.dumps({
        "meta": {"name": "landlock"},
        "filesystem": {"read": ["/usr", "/etc"]},
        "workdir": {"access": "read"},
        "linux": {"sandbox_policy": "landlock"},
        "nonod": nonod,
        "network": {"credentials": ["svc"], "custom_credentials": {"svc": {
            "upstream": f"http://localhost:{upstream}", "credential_key": f"file://{token}",
            "env_var": "SVC_TOKEN"}}},
    }))
    if owner is not None:
        os.chown(token, owner.uid, owner.gid)
        os.chown(profile, owner.uid, owner.gid)
    return profile


#: The start of a script another user runs: finds the session's shell whose command line holds
#: the marker (``sys.argv[1]``), and takes the token and the route's base URL after it
#: (``token``, ``base``); prints NOT-FOUND and exits when there is none.
FIND_TOKEN = r"""
import os, sys
marker = sys.argv[1]
for pid in os.listdir("/proc"):
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if marker.encode() in args and args[0] == b"/bin/sh":
        at = args.index(marker.encode())
        token, base = args[at + 1].decode(), args[at + 2].decode()
        break
else:
    print("NOT-FOUND"); sys.exit(0)
"""


#: Launches ARGV (JSON) in its working directory on N connections at once; prints "sent"
#: once every launch is sent, then each answer (or {"type": "gone"}) as it comes, until all
#: are answered. Standard library only (and rawclient's helpers): it runs as another user.
LAUNCHER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from rawclient import frame, read_frame, welcomed
path, cwd, count, env = sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
launch = frame(json.dumps({"type": "launch", "argv": json.loads(sys.argv[6]), "cwd": cwd,
                           "env": env, "options": {"allow_cwd": True, "block_net": True},
                           "detach": True, "stdio": "null"}).encode())
socks = [welcomed(path)[0] for _ in range(count)]
for sock in socks:
    sock.settimeout(600)
    sock.sendall(launch)
print("sent", flush=True)
for sock in socks:
    try:
        print(read_frame(sock)[1].decode(), flush=True)
    except OSError:
        print('{"type": "gone"}', flush=True)
"""


def send_launches(handle: DaemonThread, user: LocalUser, work: Path, count: int,
                  argv: tuple[str, ...] = ("/bin/true",)) -> subprocess.Popen[str]:
    """``count`` launches of ``argv`` by ``user`` in ``work``, sent on connections of their
    own and not yet answered (``LAUNCHER``: its output has the answers)."""
    launcher = subprocess.Popen(
        [*user.prefix(), SYSTEM_PYTHON, "-c", LAUNCHER, client_dir(), str(handle.socket),
         str(work), str(count), json.dumps(session_env(work)), json.dumps(list(argv))],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, cwd="/")
    assert launcher.stdout is not None
    assert launcher.stdout.readline().strip() == "sent"
    return launcher


def launch_as(handle: DaemonThread, user: LocalUser, work: Path,
              argv: tuple[str, ...] = ("/bin/true",)) -> tuple[dict[str, object], float]:
    """``user``'s launch of ``argv`` in ``work``: the answer, and how long it took."""
    began = time.monotonic()
    lines = raw_client(handle.socket, [hello(), {
        "type": "launch", "argv": list(argv), "cwd": str(work), "env": session_env(work),
        "options": {"allow_cwd": True, "block_net": True}, "detach": True, "stdio": "null"}],
        prefix=user.prefix(), timeout=300)
    return json.loads(lines[1]), time.monotonic() - began
