"""Red team, the daemon's memory, taken by replays of one user's audit file: ``audit_follow``
with ``from_start`` read the session's whole audit file and decoded every record into a list
before sending the first. A session's file may hold up to ``[audit] session_max_bytes``
(1 GiB), and a user's flooding session writes one quickly; the user then asked for it on
many connections at once (and read slowly): each request held the file and its decoded
records in the daemon, gigabytes for a few requests, until the daemon (and every user's
sessions with it) was killed for memory. Now the file is replayed a piece at a time, and a
slow reader holds one piece."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import DaemonThread, hello, raw_client, session_env
from tests.daemon.localusers import LocalUser
from tests.redteam.conftest import rss, shared_daemon, workdir

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")]

MIB = 1 << 20
HANDSHAKE = (b"GET /nonod HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nono.v1\r\n\r\n")


def _frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


@pytest.fixture
def setting(short_tmp: Path) -> Iterator[tuple[DaemonThread, LocalUser]]:
    with shared_daemon(short_tmp, 1) as (handle, users):
        yield handle, users[0]


def _ended_session(handle: DaemonThread, user: LocalUser) -> str:
    work = workdir(user)
    launch = {"type": "launch", "argv": ["/bin/true"], "cwd": str(work),
              "env": session_env(work), "options": {"allow_cwd": True, "block_net": True},
              "detach": True, "stdio": "null", "name": "done"}
    lines = raw_client(handle.socket, [hello(), launch, {"type": "wait", "session": "done"}],
                       prefix=user.prefix())
    assert json.loads(lines[-1])["type"] == "exited", lines
    return str(json.loads(lines[1])["session"]["id"])


def _grow(audit: Path, size: int) -> None:
    """Stand-in for a flooding session's file: its first record repeated up to ``size``
    (a replay reads records, it does not verify the chain), then its last ones."""
    lines = audit.read_bytes().splitlines(keepends=True)
    body = lines[0] * (size // len(lines[0]))
    audit.write_bytes(lines[0] + body + b"".join(lines[1:]))


def test_replays_of_a_large_audit_file_hold_little_of_the_daemons_memory(
        setting: tuple[DaemonThread, LocalUser]) -> None:
    handle, user = setting
    session = _ended_session(handle, user)
    _grow(handle.state_dir / "sessions" / session / "audit.ndjson", 48 * MIB)
    ask = json.dumps({"type": "audit_follow", "session": session, "from_start": True,
                      "follow": False}).encode()
    # The readers are this process's sockets, made as the user (the peer's credentials are
    # taken at connect); they ask and then read nothing.
    before = rss()
    held: list[socket.socket] = []
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        for _ in range(4):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(handle.socket))
            held.append(sock)
    finally:
        os.seteuid(0)
        os.setegid(0)
    try:
        for sock in held:
            sock.settimeout(30)
            sock.sendall(HANDSHAKE)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += sock.recv(1)
            sock.sendall(_frame(json.dumps(hello()).encode()) + _frame(ask))
        # Every replay has started (the first records are on their way): wait for them.
        for sock in held:
            first = sock.recv(2)
            assert first[0] == 0x81, first
        status = raw_client(handle.socket, [hello(), {"type": "status"}], prefix=user.prefix())
        assert json.loads(status[-1])["type"] == "daemon_status"
        grown = rss() - before
        # before: over 400 MiB (each of the 4 held its 48 MiB file and its decoded records)
        assert grown < 64 * MIB, f"the daemon grew by {grown >> 20} MiB"
    finally:
        for sock in held:
            sock.close()


async def test_a_replay_in_pieces_gives_every_complete_line_once(tmp_path: Path) -> None:
    from nonod.audit import read_lines, read_lines_from
    from tests.audit._support import write_session

    path = await write_session(tmp_path / "state")  # a real session file, sealed
    lines = path.read_bytes().splitlines()
    with open(path, "ab") as f:
        f.write(lines[0][:20])  # and a torn last line
    got: list[bytes] = []
    offset = 0
    while True:
        batch, offset = read_lines_from(path, offset, chunk=100)  # shorter than any line
        if not batch:
            break
        got += [raw for _, raw in batch]
    assert got == lines == [raw for _, raw in read_lines(path)]
    assert offset == sum(len(line) + 1 for line in lines)
