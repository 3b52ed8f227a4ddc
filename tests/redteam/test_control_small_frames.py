"""Red team, the control socket's event loop kept busy by small frames: a message cut into
one-byte fragments, or a stream of empty ones (which never reach ``max_message_bytes``), or
a flood of pongs. wsproto and trio-websocket handle each frame in the event loop (some
10-20 us), so a member of the system daemon's socket group made the daemon parse some
50,000 frames a second per connection: on this machine four such connections made another
client's request take 0.3 s at the median instead of 1 ms, for as long as they kept
sending (each message of 200,000 fragments: about 11 s of the daemon's CPU). A connection
that sends small frames that are not a whole message faster than
``SMALL_FRAMES_PER_SECOND`` (after a burst of ``SMALL_FRAMES_BURST``) is now broken at once
(``nonod/control/_transport.py``, ``FramePace``). Attacked by a real second user."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from nonod import protocol as p
from nonod.control._transport import SMALL_FRAMES_BURST
from tests.daemon.conftest import SYSTEM_PYTHON
from tests.redteam.conftest import shared_daemon

#: Runs as the attacker with the system python: the handshake and hello, then FRAMES small
#: frames of MODE (``fragments``: one byte each of one message; ``empty``: empty
#: continuation frames; ``pongs``), sent 500 at a time, then a ``status`` request; prints
#: how many were sent before the daemon broke the connection, or that it answered.
ATTACKER = r"""
import json, os, socket, sys
path, mode, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b"GET /nonod HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nono.v1\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
hello = b'{"type":"hello","protocol":1}'
s.sendall(bytes([0x81, 0x80 | len(hello)]) + b"\0\0\0\0" + hello)
s.recv(65536)  # welcome
def frame(i):
    last = i == frames - 1
    if mode == "pongs":
        return bytes([0x8A, 0x80]) + b"\0\0\0\0"
    body = b"" if mode == "empty" and not last else b" "
    first = (0x80 if last else 0) | (0x1 if i == 0 else 0)
    return bytes([first, 0x80 | len(body)]) + b"\0\0\0\0" + body
sent = 0
try:
    while sent < frames:
        batch = min(500, frames - sent)
        s.sendall(b"".join(frame(sent + i) for i in range(batch)))
        sent += batch
    status = b'{"type":"status"}'
    s.sendall(bytes([0x81, 0x80 | len(status)]) + b"\0\0\0\0" + status)
    s.settimeout(60)
    answer = s.recv(65536)
    state = "answered" if answer else "closed"
except OSError:
    state = "closed"
print(json.dumps({"sent": sent, "state": state}))
"""


def test_small_frames_cannot_hold_the_event_loop(short_tmp: Path) -> None:
    scripts = short_tmp  # 0755 in /tmp: the attacking user reads its script there
    attacker_py = scripts / "frames.py"
    attacker_py.write_text(ATTACKER)
    attacker_py.chmod(0o644)
    with shared_daemon(short_tmp, 1) as (daemon, (attacker,)):
        frames = 40_000
        procs = [subprocess.Popen(
            [*attacker.prefix(), SYSTEM_PYTHON, str(attacker_py), str(daemon.socket), mode,
             str(frames)], stdout=subprocess.PIPE, text=True)
            for mode in ("fragments", "fragments", "empty", "pongs")]
        took = []
        for _ in range(20):  # another user's requests meanwhile (root's, here)
            start = time.monotonic()
            with daemon.connect() as conn:
                assert isinstance(conn.request(p.Status()), p.DaemonStatus)
            took.append(time.monotonic() - start)
        results = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    for result in results:  # before: every frame taken, then answered
        assert result["state"] == "closed", results
        assert result["sent"] < frames, results
    took.sort()
    print("status, median and slowest:", took[len(took) // 2], took[-1])
    assert took[len(took) // 2] < 0.25, took  # before: 0.3 s at the median, here
    assert SMALL_FRAMES_BURST < 500  # the first batch alone is over the burst


def test_a_handshake_ended_with_bare_line_feeds_is_paced_too(short_tmp: Path) -> None:
    """h11 under the handshake ends a head at ``\\n\\n`` as well as ``\\r\\n\\r\\n``; the pace
    looked for the latter only, so a client that ended its head with bare line feeds was
    never paced: its 40,000 empty fragments all taken, then its request answered (review13)."""
    scripts = short_tmp  # 0755 in /tmp: the attacking user reads its script there
    attacker_py = scripts / "frames.py"
    handshake = ATTACKER.index('s.sendall(b"GET'), ATTACKER.index("head = b")
    bare = ATTACKER[handshake[0]:handshake[1]].replace(r"\r\n", r"\n")
    attacker_py.write_text(ATTACKER[:handshake[0]] + bare + ATTACKER[handshake[1]:])
    attacker_py.chmod(0o644)
    with shared_daemon(short_tmp, 1) as (daemon, (attacker,)):
        out = subprocess.run(
            [*attacker.prefix(), SYSTEM_PYTHON, str(attacker_py), str(daemon.socket), "empty",
             "40000"], stdout=subprocess.PIPE, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    assert result["state"] == "closed" and result["sent"] < 40_000, result
