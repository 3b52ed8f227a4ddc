"""A WebSocket message in tiny fragments: what the daemon holds for it stays near its limit.

A credential route's WebSocket messages are held whole in the daemon's memory (outside the
session's memory limit) to be scrubbed, each at most ``max_websocket_message_bytes``. But a
message is read as its frames: trio-websocket keeps each fragment as an object of its own
until the last one, so a program sending its message two bytes per frame made the daemon
hold some 30 times the message's size (measured: 32 MB for a 1 MiB message; a 4 MiB
message, the default limit, some 130 MB; a session relays 8 WebSockets at once). Real
sockets, a real TLS WebSocket upstream through a real route proxy, frames written by hand.
"""

from __future__ import annotations

import base64
import os
import resource
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from nonod.proxy import ProxyLimits
from tests.credentials.conftest import Pki, RouteProxy
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy
from tests.credentials.test_websocket import GEMINI, REAL, start_ws_upstream

StartProxy = Callable[..., Awaitable[RouteProxy]]


def resident() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def frame(opcode: int, payload: bytes, *, last: bool) -> bytes:
    """A client's frame (masked with a zero key, so the payload reads as it is)."""
    size = (bytes([0x80 | len(payload)]) if len(payload) < 126 else
            bytes([0x80 | 126]) + len(payload).to_bytes(2, "big"))
    return bytes([(0x80 if last else 0) | opcode]) + size + bytes(4) + payload


async def open_raw(proxy: RouteProxy, path: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all((
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"x-goog-api-key: {proxy.token.reveal()}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


async def open_through_route(nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy,
                             limit: int, *, upstream_limit: int | None = None
                             ) -> trio.SocketStream:
    """A raw WebSocket to a real TLS echo upstream through a route proxy with ``limit``."""
    port = await start_ws_upstream(nursery, pki, [], [], max_message=upstream_limit or limit)
    proxy = await start_route_proxy(
        [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"},
        limits=ProxyLimits(max_websocket_message_bytes=limit))
    return await open_raw(proxy, "/gemini/live")


@pytest.mark.parametrize(("size", "opcode"), [(2, 2), (2, 1), (1024, 2)],
                         ids=["two-bytes", "two-characters", "a-kib"])
async def test_a_message_in_small_fragments_is_relayed_holding_near_its_size(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, size: int,
        opcode: int) -> None:
    limit = 1 << 20
    stream = await open_through_route(nursery, pki, start_route_proxy, limit)
    piece, count = b"y" * size, limit // size  # the message is the limit, to the byte
    data = frame(opcode, piece, last=False) + frame(0, piece, last=False) * (count - 2)
    last = frame(0, piece, last=True)
    before = resident()
    await stream.send_all(data)  # all but the last fragment
    await trio.testing.wait_all_tasks_blocked()  # the proxy has read them, and holds them
    held = resident() - before
    await stream.send_all(last)
    echoed = b""
    while len(echoed) < 10 + limit:  # the echo, in one frame: a 64-bit length, unmasked
        more = await stream.receive_some(65536)
        assert more, echoed[:10]
        echoed += more
    assert echoed[:2] == bytes([0x80 | opcode, 0x7F])
    assert int.from_bytes(echoed[2:10], "big") == limit
    # What the daemon holds for the unfinished message is near its size; before, some 30
    # times its size with two-byte fragments.
    assert held < 3 * limit, held
    await stream.aclose()


@pytest.mark.parametrize("opcode", [2, 1], ids=["binary", "text"])
async def test_empty_fragments_are_not_held_without_end(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, opcode: int) -> None:
    # An empty fragment adds nothing to a message's size, so no limit ever counted it; yet
    # each was kept (one list entry, 8 bytes, for 6 on the wire): a program streaming them
    # made the daemon's memory grow without end, whatever max_websocket_message_bytes said.
    limit = 1 << 16
    stream = await open_through_route(nursery, pki, start_route_proxy, limit)
    empties = frame(0, b"", last=False) * (1 << 19)  # 3 MiB on the wire
    await stream.send_all(frame(opcode, b"a", last=False))
    before = resident()
    await stream.send_all(empties)
    await trio.testing.wait_all_tasks_blocked()  # the proxy has read them all
    held = resident() - before
    await stream.send_all(frame(0, b"z", last=True))
    echoed = b""
    while len(echoed) < 4:
        more = await stream.receive_some(65536)
        assert more, echoed
        echoed += more
    assert echoed == bytes([0x80 | opcode, 2]) + b"az"  # the message, its empties dropped
    assert held < 2 * limit, held  # before: some 4.5 MB, an entry per empty fragment
    await stream.aclose()


async def test_a_text_message_is_held_to_its_limit_in_bytes_not_characters(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    # trio-websocket counts a text message's characters against max_message_size: one of
    # four-byte characters was 4 times max_websocket_message_bytes, on the wire and held.
    limit = 1 << 16
    stream = await open_through_route(nursery, pki, start_route_proxy, limit,
                                      upstream_limit=4 * limit)
    piece = "\U0001f600".encode() * 5000  # 20,000 bytes, 5,000 characters
    await stream.send_all(frame(1, piece, last=False) + frame(0, piece, last=False) * 2
                          + frame(0, piece, last=True))  # 80,000 bytes, 20,000 characters
    answer = b""
    while len(answer) < 4:
        more = await stream.receive_some(65536)
        assert more, answer
        answer += more
    # The connection closed as too big (before: the message echoed, 80,000 bytes long).
    assert answer[0] == 0x88 and int.from_bytes(answer[2:4], "big") == 1009, answer[:10]
    await stream.aclose()
