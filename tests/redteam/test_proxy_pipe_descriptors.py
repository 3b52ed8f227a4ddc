"""Red team, the daemon's descriptor table again: the pump thread's pipes.

The reserve at the top of the daemon's descriptor table (``nonod/_descriptors.py``) was
kept from a session's sockets only: an accepted client or an upstream socket numbered at or
above the watermark is closed. But each tunnel direction that goes bulk gets a pipe of the
pump thread's (two descriptors, for ``splice``), made with no such check, and the kernel
hands out the lowest free numbers: a program that first opens tunnels up to the watermark
and then moves a little bulk data both ways on each has the pump fill the reserve with
pipes, and from then on the daemon cannot accept a control connection (``nonoctl ps`` and
every launch of every user time out) for as long as it holds them.

A real ``nonod`` under ``prlimit --nofile=512:512`` (a hard limit it cannot raise), a real
session, a host service that reads what it gets and sends some back.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redteam.test_descriptor_exhaustion import Nonod, nonod_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.root

#: Opens tunnels until the proxy stops answering, then sends 256 KiB on each without reading
#: what comes back; says how it went, holds them until stdin closes.
FLOOD = r'''
import base64, os, socket, sys
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
held = []
for _ in range(int(sys.argv[1])):
    try:
        s = socket.create_connection((proxy.hostname, proxy.port), timeout=3)
        s.sendall(f"CONNECT sink.test:443 HTTP/1.1\r\nHost: sink.test:443\r\n"
                  f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
        if not s.recv(200).startswith(b"HTTP/1.1 200"):
            break
    except OSError:
        break
    held.append(s)
sent = 0
for s in held:
    try:
        s.sendall(b"u" * (256 << 10))
        sent += 1
    except OSError:
        pass
print(len(held), sent, flush=True)
sys.stdin.read()
'''


@pytest.fixture
def busy_sink() -> Iterator[int]:
    """A host service that, on each connection, reads on and on and, once it has read
    something, sends 256 KiB back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        try:
            first = conn.recv(1 << 16)
            if first:
                threading.Thread(target=conn.sendall, args=(b"d" * (256 << 10),),
                                 daemon=True).start()
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()
    for conn in conns:
        conn.close()


def test_the_pumps_pipes_never_take_the_descriptors_the_daemon_serves_with(
        short_tmp: Path, busy_sink: int,
        nonod_factory: list[Nonod]) -> None:  # noqa: F811
    (short_tmp / "d").mkdir()
    daemon = Nonod(short_tmp / "d", 512, 512, busy_sink)
    nonod_factory.append(daemon)
    (daemon.work / "flood.py").write_text(FLOOD)
    flood = daemon.popen("launch", "--allow-cwd", "--allow-domain", "sink.test", "--",
                         "/usr/bin/python3", "-S", "flood.py", "400")
    try:
        assert flood.stdout is not None
        held, sent = map(int, flood.stdout.readline().split())
        assert held > 50 and sent == held, (held, sent, flood.stderr)
        listed = daemon.ctl("ps")
        assert listed.returncode == 0, listed.stderr  # before: timed out (exit 122)
        other = daemon.ctl("launch", "--allow-cwd", "--block-net", "--", "/usr/bin/true")
        assert other.returncode == 0, other.stderr
    finally:
        flood.communicate("", timeout=60)
    assert flood.returncode == 0, flood.stderr
