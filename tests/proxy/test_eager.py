"""read_now()/write_now(): a socket operation tried at once; None/0 when the kernel would
block or the stream is not a plain socket; a failed socket is a broken stream."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from nonod.proxy._eager import close_now, closing_now, read_now, write_now


def pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_read_now_returns_what_arrived_none_when_nothing_and_empty_at_the_end() -> None:
    a, b = pair()
    assert read_now(b, 100) is None
    await a.send_all(b"head")
    assert read_now(b, 100) == b"head"
    await a.send_eof()
    assert read_now(b, 100) == b""
    await a.aclose()
    await b.aclose()


async def test_write_now_takes_what_fits_and_zero_when_full() -> None:
    a, b = pair()
    assert write_now(a, b"200") == 3
    assert await b.receive_some(10) == b"200"
    big = b"x" * (8 << 20)
    taken = write_now(a, big)
    assert 0 < taken < len(big)  # a socket buffer is far smaller than 8 MiB
    assert write_now(a, big) == 0  # full now: would block
    await a.aclose()
    await b.aclose()


async def test_other_streams_are_left_to_trio() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"data")
    assert read_now(b, 100) is None
    assert write_now(a, b"more") == 0


async def test_a_reset_socket_is_a_broken_stream() -> None:
    listener = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.open_tcp_stream("127.0.0.1", listener[0].socket.getsockname()[1])
    server = await listener[0].accept()
    await client.send_all(b"unread")
    await trio.testing.wait_all_tasks_blocked()
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await server.aclose()  # closing with unread data and linger 0: a reset
    with pytest.raises(trio.BrokenResourceError):
        read_now(client, 100)
    await client.aclose()
    await listener[0].aclose()


async def test_close_now_closes_socket_streams_at_once_and_others_forcefully() -> None:
    a, b = pair()
    await close_now(a)
    assert a.socket.fileno() == -1
    assert await b.receive_some(10) == b""  # the peer sees the end
    await b.aclose()
    c, d = trio.testing.memory_stream_pair()
    async with closing_now(c):
        await c.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await c.send_all(b"y")
    await d.aclose()
