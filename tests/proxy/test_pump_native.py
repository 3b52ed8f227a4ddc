"""The pump's loop in ``relay.c`` (``libnonorelay.so``) against Python's loop alone: a routed
tunnel's short messages never reach Python, what relay.c cannot finish (a write that falls
short, a full read, an end of file, an error) is finished by Python with the same bytes in the
same order, and its table of routes refuses what would mix tunnels up."""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from nonod.proxy import _pump
from nonod.proxy._pump import Tunnel, _Pump


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


class Ended:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.tunnel: Tunnel | None = None

    def __call__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.event.set()


@pytest.fixture
def pump(request: pytest.FixtureRequest) -> _Pump:
    native = getattr(request, "param", "native") == "native"
    if native and _pump._native() is None:
        pytest.fail("libnonorelay.so is not built: run make")
    return _Pump(native=native)


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """client -- (a  proxy  b) -- upstream"""
    client, a = tcp_pair()
    b, upstream = tcp_pair()
    for sock in (a, b):
        sock.setblocking(False)
    yield client, a, b, upstream
    for sock in (client, a, b, upstream):
        sock.close()


def add(pump: _Pump, a: socket.socket, b: socket.socket, idle: float = 30.0
        ) -> tuple[Tunnel, Ended]:
    """A tunnel added from the pump's own thread (as a fresh CONNECT's is)."""
    ended = Ended()
    tunnel = Tunnel(a, b, idle, ended)
    added = threading.Event()

    def in_thread() -> None:
        pump.add(tunnel)
        added.set()

    pump.call_soon(in_thread)
    assert added.wait(5)
    return tunnel, ended


def receive_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(5)
    got = b""
    while len(got) < n:
        data = sock.recv(n - len(got))
        assert data, "the tunnel ended early"
        got += data
    return got


def test_relay_c_is_built_and_waits_for_the_process_pump() -> None:
    assert _pump._native() is not None, "libnonorelay.so is not built: run make"
    assert _Pump()._relay is not None
    assert _Pump(native=False)._relay is None


def test_short_messages_of_a_routed_tunnel_never_reach_python(
        pump: _Pump, sockets: tuple[socket.socket, ...]) -> None:
    client, a, b, upstream = sockets
    tunnel, ended = add(pump, a, b)
    assert tunnel.routed
    for i in range(50):
        client.sendall(b"up %d" % i)
        assert receive_exactly(upstream, len(b"up %d" % i)) == b"up %d" % i
        upstream.sendall(b"down %d!" % i)
        assert receive_exactly(client, len(b"down %d!" % i)) == b"down %d!" % i
    client.shutdown(socket.SHUT_WR)  # half-closed: relay.c passes the end of file on
    upstream.settimeout(5)
    assert upstream.recv(10) == b""
    upstream.sendall(b"after the client's end")
    assert receive_exactly(client, 22) == b"after the client's end"
    # relay.c did it all: Python never took the tunnel back (that would have brought its
    # counts back into the directions, and left them there when it was routed again)
    assert tunnel.routed and (tunnel.up.moved, tunnel.down.moved) == (0, 0)
    up = sum(len(b"up %d" % i) for i in range(50))
    down = sum(len(b"down %d!" % i) for i in range(50)) + 22
    upstream.shutdown(socket.SHUT_WR)  # the last end: Python's, which ends the tunnel
    assert ended.event.wait(5)
    assert not tunnel.routed and not tunnel.cancelled and tunnel.error is None
    assert (tunnel.up.moved, tunnel.down.moved) == (up, down)  # its counts came back
    assert client.recv(10) == b""


@pytest.mark.parametrize("pump", ["native", "python"], indirect=True)
def test_a_stalled_reader_gets_every_message_in_order(
        pump: _Pump, sockets: tuple[socket.socket, ...]) -> None:
    """The upstream reads nothing while the client sends messages until the proxy's socket
    to it is full: relay.c's write falls short (the rest goes to Python, which holds it and
    stops reading the client); once the upstream reads, every byte arrives in order, and the
    totals count each byte once."""
    client, a, b, upstream = sockets
    for sock, option in ((client, socket.SO_SNDBUF), (a, socket.SO_RCVBUF),
                         (b, socket.SO_SNDBUF), (upstream, socket.SO_RCVBUF)):
        sock.setsockopt(socket.SOL_SOCKET, option, 4096)
    tunnel, ended = add(pump, a, b)
    client.setblocking(False)
    sent = bytearray()
    stalled = 0
    i = 0
    while stalled < 20 and len(sent) < 4 << 20:  # until the client's buffer is full too
        message = b"%07d:" % i + bytes([65 + i % 26]) * (1000 + i % 400)
        try:
            n = client.send(message)
        except BlockingIOError:
            stalled += 1
            time.sleep(0.01)
            continue
        sent += message[:n]
        i += 1
        if n < len(message):
            break
    client.setblocking(True)
    client.shutdown(socket.SHUT_WR)
    got = receive_exactly(upstream, len(sent))
    assert got == bytes(sent)
    assert upstream.recv(10) == b""  # the client's end of file followed the bytes
    upstream.close()
    assert ended.event.wait(5)
    assert (tunnel.up.moved, tunnel.down.moved) == (len(sent), 0)
    assert tunnel.error is None


@pytest.mark.parametrize("pump", ["native", "python"], indirect=True)
def test_a_bulk_transfer_after_messages_keeps_bytes_and_totals(
        pump: _Pump, sockets: tuple[socket.socket, ...]) -> None:
    """Messages, then a transfer whose reads fill relay.c's buffer (Python's bulk path
    takes the tunnel from there), then messages again."""
    client, a, b, upstream = sockets
    tunnel, ended = add(pump, a, b)
    client.sendall(b"hello")
    assert receive_exactly(upstream, 5) == b"hello"
    payload = bytes(range(256)) * (12 << 12)  # 12 MiB

    def send() -> None:
        upstream.sendall(payload)
        upstream.sendall(b"bye")
        upstream.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    assert receive_exactly(client, len(payload) + 3) == payload + b"bye"
    sender.join(5)
    client.sendall(b"after")
    assert receive_exactly(upstream, 5) == b"after"
    client.shutdown(socket.SHUT_WR)
    assert ended.event.wait(5)
    assert (tunnel.up.moved, tunnel.down.moved) == (10, len(payload) + 3)


@pytest.mark.parametrize("pump", ["native", "python"], indirect=True)
def test_a_reset_mid_message_ends_the_tunnel_as_gone(
        pump: _Pump, sockets: tuple[socket.socket, ...]) -> None:
    client, a, b, upstream = sockets
    tunnel, ended = add(pump, a, b)
    client.sendall(b"x")
    assert receive_exactly(upstream, 1) == b"x"
    upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    upstream.close()  # a reset
    time.sleep(0.05)
    client.sendall(b"to a peer gone")
    assert ended.event.wait(5)
    assert tunnel.error is None  # a peer gone is an end, not an error
    assert tunnel.up.moved in (1, 1 + len(b"to a peer gone"))


def test_the_route_table_refuses_to_mix_tunnels_up() -> None:
    lib = _pump._native()
    assert lib is not None, "libnonorelay.so is not built: run make"
    relay = lib.nono_relay_new()
    counts = (ctypes.c_int64 * 4)()
    try:
        assert lib.nono_relay_route(relay, 5, 9, 2) == 0  # 9 to 5 has ended
        assert lib.nono_relay_route(relay, 9, 12, 0) == -1  # 9 is routed already
        assert lib.nono_relay_route(relay, 12, 12, 0) == -1
        assert lib.nono_relay_route(relay, -1, 3, 0) == -1
        assert lib.nono_relay_route(relay, 3, 4, 3) == -1  # nothing left to relay
        assert lib.nono_relay_last(relay, 9) == 0  # nothing relayed yet
        assert lib.nono_relay_unroute(relay, 9, ctypes.addressof(counts)) == 5
        assert list(counts) == [0, 0, 0, 1]  # (9's direction: bit 0)
        assert lib.nono_relay_unroute(relay, 5, ctypes.addressof(counts)) == -1
        assert lib.nono_relay_last(relay, 5) == -1
        assert lib.nono_relay_route(relay, 5000, 9, 0) == 0  # the table grows
        assert lib.nono_relay_unroute(relay, 5000, ctypes.addressof(counts)) == 9
    finally:
        lib.nono_relay_free.argtypes = (ctypes.c_void_p,)
        lib.nono_relay_free(relay)


def test_a_descriptor_always_ready_for_python_does_not_starve_the_routed_tunnels(
        pump: _Pump, sockets: tuple[socket.socket, ...]) -> None:
    """relay.c leaves routed sockets' events for the next wait when Python has something in
    this one (its loop serves watchers first), but never twice in a row: a watched
    descriptor that is ready at every wait does not hold a routed tunnel's messages."""
    client, a, b, upstream = sockets
    tunnel, _ = add(pump, a, b)
    ready = os.eventfd(1, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # readable until read: never
    calls: list[int] = []
    pump.call_soon(lambda: pump.watch(ready, select.EPOLLIN, calls.append))
    try:
        for i in range(100):
            client.sendall(b"m%d" % i)
            assert receive_exactly(upstream, len(b"m%d" % i)) == b"m%d" % i
            upstream.sendall(b"r%d" % i)
            assert receive_exactly(client, len(b"r%d" % i)) == b"r%d" % i
        assert len(calls) > 100  # it was there at (about) every wait
        assert tunnel.routed  # relay.c's all along
    finally:
        unwatched = threading.Event()

        def unwatch() -> None:
            pump.unwatch(ready)
            unwatched.set()

        pump.call_soon(unwatch)
        assert unwatched.wait(5)
        os.close(ready)
