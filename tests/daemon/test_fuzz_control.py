"""Hostile input on the control socket never crashes the daemon, and other clients never notice.

One daemon serves the whole module, with a *canary* session launched before any fuzzing. After
every example the canary must still be running with the same pid, and a fresh client must
still get answers.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonoctl.client import ConnectionLost
from nonod import protocol as p

from .conftest import DaemonThread, session_env

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
HANDSHAKE = (
    b"GET /nonod HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: nono.v1\r\n\r\n"
)
# Tags whose valid instances are harmless and answered at once (no stream, no side effect).
SAFE_TAGS = ["hello", "list", "inspect", "status", "profile_list", "profile_show",
             "profile_validate", "input", "resize", "detach"]


class Fuzzed:
    def __init__(self, daemon: DaemonThread, canary: p.SessionDetail) -> None:
        self.daemon = daemon
        self.canary = canary

    def check_alive(self) -> None:
        """The daemon answers a new client, and the canary session is untouched."""
        assert self.daemon.alive()
        with self.daemon.connect() as conn:
            reply = conn.request(p.Inspect(session=self.canary.id))
        assert isinstance(reply, p.SessionReply)
        assert reply.session.state == "running"
        assert reply.session.pid == self.canary.pid


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="nf-", dir="/tmp"))
    base.chmod(0o755)
    daemon = DaemonThread(base, config="[daemon]\nmax_message_bytes = 65536\n"
                                       "handshake_timeout = 2\n").start()
    try:
        with daemon.connect() as conn:
            reply = conn.request(p.Launch(argv=("sleep", "3600"), cwd=str(base),
                                          env=session_env(base), name="canary", detach=True,
                                          options=p.LaunchOptions(allow_cwd=True)))
        assert isinstance(reply, p.Launched)
        yield Fuzzed(daemon, reply.session)
    finally:
        daemon.stop()
        shutil.rmtree(base, ignore_errors=True)


def _raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def _drain(sock: socket.socket) -> bytes:
    """Everything until the daemon closes its side."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass  # closed with our bytes unread: a reset instead of an orderly end
    return out


def _frame(payload: bytes, *, opcode: int = 1, length: int | None = None,
           fin: bool = True) -> bytes:
    size = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | opcode])
    if size < 126:
        head.append(0x80 | size)
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------------- tests


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_instead_of_a_handshake(fuzzed: Fuzzed, data: bytes) -> None:
    with _raw(fuzzed.daemon.socket) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)
    fuzzed.check_alive()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_after_the_handshake(fuzzed: Fuzzed, data: bytes) -> None:
    with _raw(fuzzed.daemon.socket) as sock:
        sock.sendall(HANDSHAKE + data)
        sock.shutdown(socket.SHUT_WR)
        reply = _drain(sock)
    # A peer that hangs up at once may be dropped before the upgrade is answered.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 101")
    fuzzed.check_alive()


@FUZZ
@given(messages=st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)),
                         min_size=1, max_size=8))
def test_random_messages_get_errors_and_the_connection_stays_usable(
    fuzzed: Fuzzed, messages: list[str | bytes]
) -> None:
    with fuzzed.daemon.connect() as conn:
        for message in messages:
            conn._send_raw(conn._ws.text(message) if isinstance(message, str)
                           else conn._ws.binary(message))
            reply = conn.receive()
            assert isinstance(reply, p.ErrorReply)
            assert reply.code.startswith("protocol.")
        assert isinstance(conn.request(p.Status()), p.DaemonStatus)
    fuzzed.check_alive()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=12,
)


@FUZZ
@given(tag=st.sampled_from(SAFE_TAGS),
       fields=st.dictionaries(st.sampled_from(["session", "protocol", "data", "term", "profile",
                                               "resolved", "cwd", "options", "all", "rows",
                                               "client", "zzz"]), _json, max_size=4))
def test_well_tagged_messages_with_wrong_types(
    fuzzed: Fuzzed, tag: str, fields: dict[str, object]
) -> None:
    document = msgspec.json.encode({"type": tag, **fields}).decode()
    with fuzzed.daemon.connect() as conn:
        conn._send_raw(conn._ws.text(document))
        reply = conn.receive()
        assert not isinstance(reply, p.ErrorReply) or not reply.code.startswith("internal")
        assert isinstance(conn.request(p.ListSessions()), p.SessionList)
    fuzzed.check_alive()


@FUZZ
@given(announced=st.integers(min_value=1, max_value=(1 << 20)),
       sent=st.binary(max_size=512), fin=st.booleans(), opcode=st.sampled_from([0, 1, 2, 9]))
def test_truncated_frames(
    fuzzed: Fuzzed, announced: int, sent: bytes, fin: bool, opcode: int
) -> None:
    with fuzzed.daemon.connect() as conn:
        frame = _frame(sent, opcode=opcode, length=max(announced, len(sent) + 1), fin=fin)
        conn.sock.sendall(frame[: len(frame) - 1] if len(sent) else frame)
        conn.sock.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionLost):
            while True:
                conn.receive()
    fuzzed.check_alive()


def test_a_huge_frame_closes_that_connection_with_1009(fuzzed: Fuzzed) -> None:
    with fuzzed.daemon.connect() as conn:
        conn.sock.sendall(_frame(b"x" * 100_000))
        with pytest.raises(ConnectionLost, match="1009"):
            while True:
                conn.receive()
    fuzzed.check_alive()


def test_an_absurd_frame_length_is_a_protocol_error(fuzzed: Fuzzed) -> None:
    with fuzzed.daemon.connect() as conn:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", (1 << 63) + 5) + os.urandom(4)
        conn.sock.sendall(head + b"abc")
        with pytest.raises(ConnectionLost):
            while True:
                conn.receive()
    fuzzed.check_alive()


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: nono.v1\r\n\r\n",
        HANDSHAKE.replace(b"Sec-WebSocket-Protocol: nono.v1\r\n", b""),
        b"POST /nonod HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /nonod HTTP/1.1\r\n" + b"X-Junk: " + b"a" * 100_000 + b"\r\n\r\n",
    ],
    ids=["wrong-path", "no-subprotocol", "not-websocket", "huge-header"],
)
def test_bad_handshakes_are_rejected(fuzzed: Fuzzed, request_head: bytes) -> None:
    with _raw(fuzzed.daemon.socket) as sock:
        try:
            sock.sendall(request_head)
        except BrokenPipeError:
            pass  # the daemon may hang up before reading it all
        reply = _drain(sock)
    assert not reply.startswith(b"HTTP/1.1 101")
    fuzzed.check_alive()


@FUZZ
@given(count=st.integers(min_value=1, max_value=12))
def test_passed_descriptors_never_leak(fuzzed: Fuzzed, count: int) -> None:
    before = _fd_count()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with fuzzed.daemon.connect() as conn:
            data = conn._ws.text('{"type": "list"}')
            try:
                socket.send_fds(conn.sock, [data], [null] * count)
                while not isinstance(conn.receive(), p.SessionList):
                    pass
            except (ConnectionLost, BrokenPipeError, ConnectionResetError):
                assert count > p.PASSED_FDS
            conn.sock.shutdown(socket.SHUT_WR)
            try:
                while True:
                    conn.receive()
            except ConnectionLost:
                pass
    finally:
        os.close(null)
    assert _fd_count() <= before
    fuzzed.check_alive()


def test_ten_thousand_rapid_connects(fuzzed: Fuzzed) -> None:
    path = str(fuzzed.daemon.socket)

    def hammer(n: int) -> int:
        done = 0
        for i in range(n):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                if i % 3 == 0:
                    sock.send(b"GET /nonod HTTP/1.1\r\n")
                done += 1
            except OSError:
                pass  # a full backlog refuses: that is the kernel protecting the daemon
            finally:
                sock.close()
        return done

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        connected = sum(pool.map(hammer, [1250] * 8))
    assert connected > 5000
    fuzzed.check_alive()

