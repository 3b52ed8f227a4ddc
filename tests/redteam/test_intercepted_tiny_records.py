"""A request body in one-byte TLS records inside an intercepted tunnel costs the proxy little.

Inside an intercepted tunnel the proxy is the program's TLS server. A program may cut its
request body into TLS records of one byte each (23 bytes on the wire each) and send them all
in one write. The proxy's TLS reader handed the body on one record per read, and each went
upstream as its own write, its own TLS record: the twentieth pass measured 92 us of the
daemon's event loop per record, about 4 s per MB on the wire, for as long as the session
ran, every session's proxy and the control socket waiting behind it. A real proxy
intercepting a real TLS upstream; the client's records are encrypted before the clock
starts, so what is measured is the proxy's work (and the upstream's, both in this thread).
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Awaitable, Callable

import trio

from nonod.credentials import SessionCA
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
from tests.redteam.test_proxy_tiny_chunks import chunked_body

RECORDS = 20_000
StartRouteProxy = Callable[..., Awaitable[RouteProxy]]


class _RecordClient:
    """A TLS client over memory BIOs: the records it sends are written out whole, at once."""

    def __init__(self, stream: trio.SocketStream, ca: SessionCA, host: str) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=ca.cert_pem().decode())
        self.stream = stream
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.stream.send_all(self.outgoing.read())
                self.incoming.write(await self.stream.receive_some(65536))
        await self.stream.send_all(self.outgoing.read())

    def records(self, pieces: list[bytes]) -> bytes:
        """The ciphertext of one TLS record per piece."""
        for piece in pieces:
            self.tls.write(piece)
        return self.outgoing.read()

    async def answer(self) -> bytes:
        got = b""
        while not got.endswith(b"\r\n0\r\n\r\n"):  # a chunked answer, whole
            try:
                got += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            data = await self.stream.receive_some(65536)
            assert data, got
            self.incoming.write(data)
        return got


async def test_a_body_in_one_byte_tls_records_costs_the_proxy_little(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartRouteProxy) -> None:
    async def app(request: UpstreamRequest, respond: Responder) -> None:
        await respond.whole(200, b"got %d ok" % len(request.body))

    port, seen = await start_tls_upstream(nursery, pki.server, app)
    ca = SessionCA(["api.github.com"])
    proxy = await start_route_proxy([(github_route(), "ghp_real_0123456789")],
                                    pins={"api.github.com": f"127.0.0.1:{port}"},
                                    intercept=ca)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    basic = base64.b64encode(f"nono:{proxy.token.reveal()}".encode()).decode()
    await stream.send_all(b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n"
                          b"Proxy-Authorization: Basic " + basic.encode() + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    client = _RecordClient(stream, ca, "api.github.com")
    await client.handshake()
    wire = client.records([b"POST /user HTTP/1.1\r\nHost: api.github.com\r\n"
                           b"Content-Length: %d\r\n\r\n" % RECORDS] + [b"x"] * RECORDS)
    assert len(wire) > 20 * RECORDS  # one record per byte
    before = time.thread_time()
    await stream.send_all(wire)
    answer = await client.answer()
    spent = time.thread_time() - before
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"got %d ok" % RECORDS in chunked_body(answer), answer
    assert seen.requests[0].body == b"x" * RECORDS
    print(f"{spent / RECORDS * 1e6:.1f} us per record")
    # Before: some 90 us per record (the twentieth pass's figure), one upstream write each.
    assert spent / RECORDS < 20e-6, f"{spent / RECORDS * 1e6:.1f} us per record"
    await stream.aclose()
