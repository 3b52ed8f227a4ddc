"""TlsStream: TLS to a route's upstream over memory BIOs, fed by large socket reads."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trustme

from nonod.proxy._tls import TlsStream


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


Handler = Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[None]]


async def serve_one(nursery: trio.Nursery, context: ssl.SSLContext, handler: Handler) -> int:
    async def accepted(tcp: trio.SocketStream) -> None:
        await handler(trio.SSLStream(tcp, context, server_side=True))

    listeners = await nursery.start(trio.serve_tcp, accepted, 0)
    return int(listeners[0].socket.getsockname()[1])


async def test_a_refused_certificate_is_told_to_the_server(nursery: trio.Nursery) -> None:
    """The handshake fails on our side, and OpenSSL's alert still reaches the upstream (it
    sees why, not a bare close)."""
    untrusted, trusted = trustme.CA(), trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted.issue_cert("upstream.test").configure_cert(server)
    seen: list[BaseException] = []
    done = trio.Event()

    async def handshake(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            seen.append(exc.__cause__ or exc)
        finally:
            done.set()

    port = await serve_one(nursery, server, handshake)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    with pytest.raises(trio.BrokenResourceError, match="certificate verify failed"):
        await TlsStream.connect(tcp, client_context(trusted), "upstream.test")
    with trio.fail_after(5):
        await done.wait()
    assert "unknown ca" in str(seen[0]).lower()


async def test_both_directions_at_once_keep_their_order(nursery: trio.Nursery) -> None:
    """One task sends while another receives (a WebSocket relay does): every byte arrives,
    in order, both ways, through the one SSL object and its two BIOs."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("upstream.test").configure_cert(server)
    up = bytes(range(256)) * 8192  # 2 MiB
    down = bytes(reversed(range(256))) * 12288  # 3 MiB
    got_up = bytearray()
    all_up = trio.Event()

    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(stream.send_all, down)
            while len(got_up) < len(up):
                got_up.extend(await stream.receive_some(1 << 16))
            all_up.set()

    port = await serve_one(nursery, server, echo)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = await TlsStream.connect(tcp, client_context(ca), "upstream.test")
    got_down = bytearray()

    async def receive() -> None:
        buffer = memoryview(bytearray(1 << 20))
        while len(got_down) < len(down):
            n = await tls.receive_into(buffer)
            assert n
            got_down.extend(buffer[:n])

    with trio.fail_after(20):
        async with trio.open_nursery() as both:
            both.start_soon(receive)
            for start in range(0, len(up), 300_001):
                await tls.send_all(up[start:start + 300_001])
    assert bytes(got_down) == down
    with trio.fail_after(5):
        await all_up.wait()
    assert bytes(got_up) == up
    await tls.aclose()
