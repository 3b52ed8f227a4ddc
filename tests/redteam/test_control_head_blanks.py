"""Red team: the daemon's event loop held by one control connection's handshake.

The control socket's WebSocket handshake is read by h11 (through wsproto) in the event loop.
redteam16 gave h11 a linear header-line reader (``nonod.proxy._h11_lines``), but only the
proxy's and the metrics server's modules brought it: a daemon that had not yet run a session
with a proxy read its control connections with h11's own expression, which tries every split
of a run of blanks after a header's colon (time quadratic in the run). A handshake line of
16,000 blanks and a NUL (h11 takes a head of about 16 KiB) held a real daemon's loop for
about a second per connection, so any member of the system daemon's socket group could stall
every user's launches and sessions with a few connections a second. Real daemon process,
real socket; the test process imports nothing that patches h11 in the daemon.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.daemon.conftest import UserDaemon, user_daemon  # noqa: F401 - fixture

pytestmark = pytest.mark.root

BAD_HEAD = (b"GET /nonod HTTP/1.1\r\nHost: localhost\r\nx:" + b" " * 16_000
            + b"\x00\r\n\r\n")
ROUNDS = 6


def refused_after(path: str) -> float:
    """Send the bad handshake; seconds until the daemon answers or closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(path)
        started = time.monotonic()
        sock.sendall(BAD_HEAD)
        while sock.recv(4096):
            pass
        return time.monotonic() - started


def test_a_handshake_with_a_long_run_of_blanks_is_refused_at_once(
        user_daemon: UserDaemon) -> None:  # noqa: F811
    took = sorted(refused_after(str(user_daemon.socket)) for _ in range(ROUNDS))
    # before: 0.8-1.5 s each on this machine, the daemon's event loop held all along
    assert took[ROUNDS // 2] < 0.25, took
    assert user_daemon.nonoctl("daemon", "status").returncode == 0
