"""A request body in one-byte chunks: the proxy passes it on in a few writes, not one per chunk.

The forward proxy (plain HTTP) and a credential route's reverse proxy pass a request body on
as h11 reads it, on the event loop every session's proxy shares. h11 gives one event per
chunk, and each was sent upstream on its own: a body of one-byte chunks (6 bytes on the
wire each) cost the loop some 50 us per byte, so one connection streaming such a body kept
the daemon's loop busy, every session's proxy and control requests waiting behind it. A real
proxy, a real upstream that counts the chunks it receives.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

from nonod.proxy import ProxyPolicy
from tests.credentials.conftest import (
    Pki,
    Responder,
    RouteProxy,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy
from tests.proxy.conftest import Proxy, start_proxy, start_server  # noqa: F401 - a fixture

CHUNKS = 20_000
StartProxy = Callable[..., Awaitable[Proxy]]
StartRouteProxy = Callable[..., Awaitable[RouteProxy]]


async def test_a_body_in_one_byte_chunks_goes_on_in_a_few_writes(
        nursery: trio.Nursery, start_proxy: StartProxy) -> None:  # noqa: F811
    received = bytearray()
    answered = trio.Event()

    async def upstream(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.extend(data)
            if received.endswith(b"\r\n0\r\n\r\n"):
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                answered.set()
                return

    port = await start_server(nursery, upstream)
    proxy = await start_proxy(ProxyPolicy(hosts=frozenset({"up.example"})),
                              pins={"up.example": f"127.0.0.1:{port}"})
    client = await proxy.open()
    await client.send_all(b"POST http://up.example/upload HTTP/1.1\r\nHost: up.example\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * CHUNKS +
                          b"0\r\n\r\n")
    answer = b""
    while b"ok" not in answer:
        more = await client.receive_some(4096)
        assert more, answer[-300:]
        answer += more
    assert answer.startswith(b"HTTP/1.1 200")
    await answered.wait()
    _, _, body = bytes(received).partition(b"\r\n\r\n")
    chunks = body.split(b"\r\n")[0::2][:-2]  # the chunk sizes, without the last 0
    assert sum(int(size, 16) for size in chunks) == CHUNKS  # the whole body, in order
    assert b"".join(body.split(b"\r\n")[1::2]) == b"x" * CHUNKS
    # Before: 20,000 chunks of 1 byte, one write each.
    assert len(chunks) < 100, len(chunks)
    await client.aclose()



async def test_a_route_request_body_in_one_byte_chunks_costs_the_loop_little(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartRouteProxy) -> None:
    """The same on a credential route (the reverse proxy, a TLS upstream): measured, the
    event loop's CPU per one-byte chunk (before: some 60 us, a TLS record each; now about 5)."""

    async def app(request: UpstreamRequest, respond: Responder) -> None:
        await respond.whole(200, b"got %d" % len(request.body))

    port, seen = await start_tls_upstream(nursery, pki.server, app)
    proxy = await start_route_proxy([(github_route(), "ghp_real_0123456789")],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    client = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    body = b"1\r\nx\r\n" * CHUNKS + b"0\r\n\r\n"
    before = time.thread_time()
    await client.send_all(b"POST /github/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Authorization: Bearer " + proxy.token.reveal().encode() +
                          b"\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    answer = b""
    while not answer.endswith(b"\r\n0\r\n\r\n"):  # a chunked answer, whole
        more = await client.receive_some(4096)
        assert more, answer[-300:]
        answer += more
    spent = time.thread_time() - before
    assert answer.startswith(b"HTTP/1.1 200") and b"got %d" % CHUNKS in chunked_body(answer)
    assert seen.requests[0].body == b"x" * CHUNKS
    print(f"{spent / CHUNKS * 1e6:.1f} us per chunk")
    assert spent / CHUNKS < 20e-6, f"{spent / CHUNKS * 1e6:.1f} us per chunk"
    await client.aclose()


def chunked_body(answer: bytes) -> bytes:
    """The body of a whole chunked answer, its framing taken off (the proxy passes a word
    cut at a piece's end in the next chunk: docs/credentials.md, the scrubber)."""
    rest = answer.partition(b"\r\n\r\n")[2]
    body = b""
    while True:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size.split(b";")[0], 16)
        if not length:
            return body
        body, rest = body + rest[:length], rest[length + 2:]
