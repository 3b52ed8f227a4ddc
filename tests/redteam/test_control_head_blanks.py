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

import os
import socket
import time
from pathlib import Path

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


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_handshake_with_a_long_run_of_blanks_is_refused_at_once(
        user_daemon: UserDaemon) -> None:  # noqa: F811
    # Counted in the daemon's CPU time (its loop runs the reader): the wall time of an
    # answer also holds whatever else the host runs meanwhile.
    cpu = cpu_seconds(user_daemon.pid)
    took = sorted(refused_after(str(user_daemon.socket)) for _ in range(ROUNDS))
    spent = (cpu_seconds(user_daemon.pid) - cpu) / ROUNDS
    print(f"per handshake: {spent * 1000:.0f} ms of the daemon's CPU; answered after {took}")
    # before: 0.8-1.5 s each on this machine, the daemon's event loop held all along
    assert spent < 0.25, took
    assert user_daemon.nonoctl("daemon", "status").returncode == 0
