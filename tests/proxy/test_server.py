"""End to end: a real proxy listener on 127.0.0.1, real local upstreams (plain TCP echo, TLS,
HTTP), real clients."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

import h11
import pytest
import trio
import trustme
from structlog.testing import capture_logs

from nonod.proxy import ProxyLimits, ProxyPolicy, ProxyServer, serve_proxy
from tests.proxy.conftest import (
    TOKEN,
    EventLog,
    Proxy,
    RecordingResolver,
    connect_head,
    echo_handler,
    fake_dns,
    read_all,
    read_head,
    start_server,
)

GITHUB = ProxyPolicy(hosts=frozenset({"api.github.com", "rebind.example", "plain.example"}))
StartProxy = Callable[..., Any]


async def open_tunnel(proxy: Proxy, target: str = "api.github.com:443", *,
                      token: str | None = None, extra: bytes = b""
                      ) -> tuple[trio.SocketStream, int, bytes]:
    stream = await proxy.open()
    await stream.send_all(connect_head(target, token=token) + extra)
    code, body, after = await read_head(stream)
    return stream, code, after or body


async def test_tunnel_relays_a_large_transfer_both_ways(start_proxy: StartProxy,
                                                        echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"})
    stream, code, early = await open_tunnel(proxy)
    assert code == 200 and early == b""
    payload = os.urandom(8 << 20)
    received = hashlib.sha256()
    count = 0

    async def send() -> None:
        await stream.send_all(payload)
        await stream.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                break
            received.update(data)
            count += len(data)
    await stream.aclose()
    assert count == len(payload)
    assert received.digest() == hashlib.sha256(payload).digest()
    await wait_for_events(proxy, 2)
    closed = proxy.events[-1]
    assert (closed.stage, closed.bytes_out, closed.bytes_in) == ("close", len(payload),
                                                                 len(payload))


async def wait_for_events(proxy: Proxy, n: int) -> None:
    """Until the proxy has reported ``n`` events (it reports a tunnel's close after both
    directions end)."""
    with trio.fail_after(10):
        await proxy.events.wait_for(n)


async def test_data_sent_with_the_connect_head_arrives_first(
        start_proxy: StartProxy, nursery: trio.Nursery) -> None:
    first: list[bytes] = []

    async def recording_echo(stream: trio.SocketStream) -> None:
        data = await stream.receive_some(65536)
        first.append(data)
        await stream.send_all(data)
        await echo_handler(stream)

    port = await start_server(nursery, recording_echo)
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{port}"})
    stream = await proxy.open()
    # One send: the CONNECT head and the first bytes of the tunnel in the same segment.
    await stream.send_all(connect_head("api.github.com:443") + b"\x16\x03\x01hello")
    code, _, after = await read_head(stream)
    assert code == 200
    echoed = after
    while len(echoed) < 8:
        echoed += await stream.receive_some(100)
    assert echoed == b"\x16\x03\x01hello"
    assert first == [b"\x16\x03\x01hello"]
    await stream.aclose()


async def test_tls_through_the_tunnel(start_proxy: StartProxy, nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.github.com").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def tls_echo(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        try:
            await tls.do_handshake()
            async for data in tls:
                await tls.send_all(b"tls:" + data)
        except trio.BrokenResourceError:
            pass

    port = await start_server(nursery, tls_echo)
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{port}"})
    stream, code, _ = await open_tunnel(proxy)
    assert code == 200
    tls = trio.SSLStream(stream, client_ctx, server_hostname="api.github.com")
    await tls.do_handshake()
    await tls.send_all(b"ping")
    assert await tls.receive_some(100) == b"tls:ping"
    await tls.aclose()


async def test_disallowed_host_gets_403_and_no_dns_query(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(GITHUB, dns={"secret-data.attacker.example": ["1.2.3.4"]})
    for target in ["secret-data.attacker.example:443", "169.254.169.254:80",
                   "127.0.0.1:443", "[::1]:443", "0x7f000001:443", "2130706433:443",
                   "[::ffff:127.0.0.1]:443"]:
        stream, code, body = await open_tunnel(proxy, target)
        assert code == 403, target
        assert b"nono proxy" in body
        await stream.aclose()
    assert proxy.resolver.asked == []
    assert [e.decision for e in proxy.events] == ["deny"] * 7


async def test_pinned_name_works_unpinned_loopback_answer_refused(start_proxy: StartProxy,
                                                                  echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              dns={"rebind.example": ["127.0.0.1"]})
    stream, code, _ = await open_tunnel(proxy, "api.github.com:443")
    assert code == 200
    await stream.send_all(b"hi")
    assert await stream.receive_some(10) == b"hi"
    await stream.aclose()
    refused, code, body = await open_tunnel(proxy, "rebind.example:443")
    assert code == 403 and body.endswith(b"(loopback)\n")
    await refused.aclose()
    assert proxy.resolver.asked == [("api.github.com", 443), ("rebind.example", 443)]


async def test_unresolvable_allowed_name_gets_502(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(GITHUB)
    stream, code, body = await open_tunnel(proxy, "plain.example:443")
    assert code == 502 and body.endswith(b"(resolve_failed)\n")
    await stream.aclose()


async def test_connect_timeout_gets_502(start_proxy: StartProxy) -> None:
    # A listener whose accept queue is full: further SYNs are dropped, connects hang.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(0)
    filler = socket.create_connection(sink.getsockname())
    try:
        pin = f"127.0.0.1:{sink.getsockname()[1]}"
        proxy = await start_proxy(GITHUB, pins={"api.github.com": pin},
                                  limits=ProxyLimits(connect_timeout=0.3))
        stream, code, body = await open_tunnel(proxy)
        assert code == 502 and body.endswith(b"(connect_timeout)\n")
        await stream.aclose()
        await wait_for_events(proxy, 1)
        # allowed, but it could not connect
        assert [(e.decision, e.reason, e.status) for e in proxy.events] == [
            ("allow", "connect_timeout", 502)]
        assert proxy.server.statistics().active == 0
    finally:
        filler.close()
        sink.close()


async def test_proxy_token_on_a_real_listener(start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    stream, code, _ = await open_tunnel(proxy)
    assert code == 407
    await stream.aclose()
    with capture_logs() as logs:
        stream, code, _ = await open_tunnel(proxy, token=TOKEN)
        assert code == 200
        await stream.aclose()
        await wait_for_events(proxy, 3)
    assert TOKEN not in repr(proxy.events) and TOKEN not in repr(logs)


async def test_idle_and_slow_clients_do_not_block_others(start_proxy: StartProxy,
                                                         echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              limits=ProxyLimits(head_timeout=1.0))
    slow = []
    for _ in range(50):
        stream = await proxy.open()
        await stream.send_all(b"CONNECT api.github.com:443 HTTP/1.1\r\nHo")
        slow.append(stream)
    idle = [await proxy.open() for _ in range(50)]
    # Meanwhile a well-behaved client gets its tunnel at once.
    with trio.fail_after(0.9):
        stream, code, _ = await open_tunnel(proxy)
        assert code == 200
        await stream.send_all(b"still here")
        assert await stream.receive_some(100) == b"still here"
    await stream.aclose()
    # And the slow ones are sent away when their head time is up.
    with trio.fail_after(5):
        for conn in slow + idle:
            assert (await read_all(conn)).startswith(b"HTTP/1.1 408 ")
    for conn in slow + idle:
        await conn.aclose()


async def test_200_concurrent_tunnels(start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"})
    results: list[bytes] = []

    async def one(i: int) -> None:
        stream, code, _ = await open_tunnel(proxy)
        assert code == 200
        message = b"tunnel %d " % i * 100
        await stream.send_all(message)
        await stream.send_eof()
        results.append(b"ok" if await read_all(stream) == message else b"bad")
        await stream.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert results == [b"ok"] * 200
    await wait_for_events(proxy, 400)
    assert proxy.server.statistics().allowed == 200


async def test_connection_limit(start_proxy: StartProxy, echo_port: int) -> None:
    proxy = await start_proxy(GITHUB, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              limits=ProxyLimits(max_connections=2))
    held = [await proxy.open() for _ in range(2)]
    for conn in held:
        await conn.send_all(b"CONNECT api.github.com:443 HTTP/1.1\r\n")  # incomplete
    extra = await proxy.open()
    assert (await read_all(extra)).startswith(b"HTTP/1.1 503 ")
    stats = proxy.server.statistics()
    assert (stats.active, stats.rejected) == (2, 1)
    assert proxy.events[-1].reason == "too_many_connections"
    for conn in held:
        await conn.aclose()
    await extra.aclose()


async def test_plain_http_forwarding(start_proxy: StartProxy, nursery: trio.Nursery) -> None:
    seen: list[h11.Request] = []
    bodies: list[bytes] = []

    async def http_server(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                seen.append(event)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        bodies.append(body)
        await stream.send_all(conn.send(h11.Response(
            status_code=201, headers=[("Transfer-Encoding", "chunked"),
                                      ("Proxy-Authenticate", "Basic"),
                                      ("X-Upstream", "yes")])))
        for part in (b"hello ", b"world"):
            await stream.send_all(conn.send(h11.Data(data=part)))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    port = await start_server(nursery, http_server)
    proxy = await start_proxy(GITHUB, pins={"plain.example": f"127.0.0.1:{port}"},
                              token=TOKEN)
    stream = await proxy.open()
    client = h11.Connection(h11.CLIENT)
    import base64

    auth = "Basic " + base64.b64encode(f"nono:{TOKEN}".encode()).decode()
    await stream.send_all(client.send(h11.Request(
        method="POST", target="http://plain.example/upload?key=v",
        headers=[("Host", "evil.internal"), ("Proxy-Authorization", auth),
                 ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
                 ("Transfer-Encoding", "chunked"), ("Accept", "*/*")])))
    await stream.send_all(client.send(h11.Data(data=b"part1,")))
    await stream.send_all(client.send(h11.Data(data=b"part2")))
    await stream.send_all(client.send(h11.EndOfMessage()))
    response: h11.Response | None = None
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    await stream.aclose()
    assert response is not None and response.status_code == 201
    names = {name for name, _ in response.headers}
    assert b"x-upstream" in names and b"proxy-authenticate" not in names
    assert body == b"hello world"
    (request,) = seen
    assert request.target == b"/upload?key=v"
    headers = dict(request.headers)
    assert headers[b"host"] == b"plain.example"
    assert b"proxy-authorization" not in headers and b"x-private" not in headers
    assert headers[b"connection"] == b"close"
    assert bodies == [b"part1,part2"]
    await wait_for_events(proxy, 1)
    (event,) = proxy.events
    assert (event.mode, event.method, event.path, event.status) == ("http", "POST",
                                                                   "/upload", 201)
    assert (event.bytes_out, event.bytes_in) == (11, 11)


async def test_cancelling_the_proxy_closes_everything(nursery: trio.Nursery,
                                                      echo_port: int) -> None:
    from nonod.proxy import Resolver, serve_proxy

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    # serve_proxy runs in the test's nursery; cancelling its own scope must stop it.
    inner = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[ProxyServer] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        with inner:
            await serve_proxy(listeners[0], policy=GITHUB,
                              resolver=Resolver(pins={"api.github.com":
                                                      f"127.0.0.1:{echo_port}"}),
                              events=lambda event: None, task_status=task_status)

    await nursery.start(serve)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(connect_head("api.github.com:443"))
    code, _, _ = await read_head(stream)
    assert code == 200
    inner.cancel()
    with trio.fail_after(5):
        assert await read_all(stream) == b""
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    await stream.aclose()


async def http_exchange(proxy: Proxy, request: h11.Request, body: bytes = b""
                        ) -> tuple[int, bytes]:
    stream = await proxy.open()
    client = h11.Connection(h11.CLIENT)
    await stream.send_all(client.send(request))
    if body:
        await stream.send_all(client.send(h11.Data(data=body)))
    await stream.send_all(client.send(h11.EndOfMessage()))
    code, data = 0, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            code = event.status_code
        elif isinstance(event, h11.Data):
            data += event.data
        else:
            break
    await stream.aclose()
    return code, data


async def test_plain_http_upstream_that_closes_gets_502(start_proxy: StartProxy,
                                                        nursery: trio.Nursery) -> None:
    async def rude(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    port = await start_server(nursery, rude)
    proxy = await start_proxy(GITHUB, pins={"plain.example": f"127.0.0.1:{port}"})
    code, body = await http_exchange(proxy, h11.Request(
        method="GET", target="http://plain.example/", headers=[("Host", "plain.example")]))
    assert code == 502 and body.endswith(b"(upstream_error)\n")
    assert proxy.events[-1].decision == "allow"


async def _resetting(stream: trio.SocketStream) -> None:
    """Reads the request, then resets the connection (SO_LINGER 0): the proxy's read fails
    with ECONNRESET instead of seeing an orderly end."""
    await stream.receive_some(65536)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                             b"\x00\x00\x00\x00")
    stream.socket.close()


async def _tls_only(stream: trio.SocketStream, context: ssl.SSLContext) -> None:
    """A server that speaks only TLS: plain HTTP fails its handshake."""
    tls = trio.SSLStream(stream, context, server_side=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError:
        pass
    await trio.aclose_forcefully(stream)


@pytest.mark.parametrize("upstream", ["reset", "tls_only"])
async def test_plain_http_upstream_that_fails_gets_502_with_a_reason(
        start_proxy: StartProxy, nursery: trio.Nursery, upstream: str) -> None:
    if upstream == "reset":
        port = await start_server(nursery, _resetting)
    else:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        trustme.CA().issue_cert("plain.example").configure_cert(context)
        port = await start_server(nursery, lambda s: _tls_only(s, context))
    proxy = await start_proxy(GITHUB, pins={"plain.example": f"127.0.0.1:{port}"})
    for body in (b"", b"x" * 300_000):  # without a body, and with one the upstream drops
        code, answer = await http_exchange(proxy, h11.Request(
            method="POST", target="http://plain.example/", headers=[
                ("Host", "plain.example"), ("Content-Length", str(len(body)))]), body)
        assert code == 502 and answer.endswith(b"(upstream_error)\n"), (code, answer)
        assert (proxy.events[-1].decision, proxy.events[-1].status) == ("allow", 502)


async def test_plain_http_head_and_content_length(start_proxy: StartProxy,
                                                  nursery: trio.Nursery) -> None:
    async def server(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
        await stream.send_all(conn.send(h11.Response(status_code=200,
                                                     headers=[("Content-Length", "1000")])))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    port = await start_server(nursery, server)
    proxy = await start_proxy(GITHUB, pins={"plain.example": f"127.0.0.1:{port}"})
    code, body = await http_exchange(proxy, h11.Request(
        method="HEAD", target="http://plain.example/x", headers=[("Host", "plain.example")]))
    assert (code, body) == (200, b"")


async def test_plain_http_to_a_refused_host(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(GITHUB)
    code, body = await http_exchange(proxy, h11.Request(
        method="GET", target="http://169.254.169.254/latest/meta-data/",
        headers=[("Host", "169.254.169.254")]))
    assert code == 403 and body.endswith(b"(link_local)\n")
    assert proxy.resolver.asked == []
    (event,) = proxy.events
    assert (event.mode, event.method, event.path) == ("http", "GET", "/latest/meta-data/")


async def test_a_flood_on_one_session_leaves_another_working(start_proxy: StartProxy,
                                                             echo_port: int) -> None:
    pins = {"api.github.com": f"127.0.0.1:{echo_port}"}
    # The flood's first 64 are served and send nothing: a head timeout past the flood's
    # length, so that none of them ends and gives its place to a later one (the default
    # 10 s ran out during the 2,000 opens at load 16: 128 more were served).
    flooded = await start_proxy(GITHUB, pins=pins, limits=ProxyLimits(max_connections=64,
                                                                      head_timeout=600))
    other = await start_proxy(GITHUB, pins=pins, limits=ProxyLimits(max_connections=64))
    flood = [await flooded.open() for _ in range(2000)]
    with trio.fail_after(30):  # at once; a loaded host may take seconds
        stream, code, _ = await open_tunnel(other)
        assert code == 200
        await stream.send_all(b"fine")
        assert await stream.receive_some(10) == b"fine"
    await stream.aclose()
    with trio.fail_after(60):
        while flooded.server.statistics().accepted < 2000:
            await trio.testing.wait_all_tasks_blocked()
    stats = flooded.server.statistics()
    assert stats.active == 64 and stats.rejected == 2000 - 64
    for conn in flood:
        await conn.aclose()


async def test_a_failure_stays_with_its_connection(nursery: trio.Nursery,
                                                   echo_port: int) -> None:
    import functools

    from nonod.proxy import Resolved, Resolver, serve_proxy

    class Flaky(Resolver):
        failures = 1

        def resolve_now(self, host: str, port: int) -> Resolved | None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("boom: internal detail")
            return super().resolve_now(host, port)

    events = EventLog()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await nursery.start(functools.partial(
        serve_proxy, listeners[0], policy=GITHUB,
        resolver=Flaky(pins={"api.github.com": f"127.0.0.1:{echo_port}"}),
        events=events.append))
    with capture_logs() as logs:
        broken = await trio.open_tcp_stream("127.0.0.1", port)
        await broken.send_all(connect_head("api.github.com:443"))
        assert await read_all(broken) == b""  # closed, nothing said
        await broken.aclose()
        with trio.fail_after(5):
            await events.wait_for(1)
    assert [entry["event"] for entry in logs] == ["proxy.connection_failed"]
    assert logs[0]["log_level"] == "error" and logs[0]["exc_info"]
    assert [(e.decision, e.reason) for e in events] == [("deny", "internal_error")]
    # The proxy goes on serving.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(connect_head("api.github.com:443"))
    code, _, _ = await read_head(stream)
    assert code == 200
    await stream.aclose()


async def test_a_forward_in_flight_when_the_session_ends_is_recorded(
        nursery: trio.Nursery) -> None:
    """A session's services are cancelled when its program ends; a plain HTTP request that
    reached the upstream by then still gets its record (before the session's audit file is
    sealed). Before: cancelled with its handler, it left none."""
    reached = trio.Event()

    async def hangs(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        reached.set()
        await trio.sleep_forever()

    port = await start_server(nursery, hangs)
    events: list[Any] = []
    async with trio.open_nursery() as session:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        proxy_port = listeners[0].socket.getsockname()[1]
        await session.start(functools.partial(
            serve_proxy, listeners[0], policy=GITHUB, events=events.append,
            resolver=RecordingResolver(pins={"plain.example": f"127.0.0.1:{port}"},
                                       getaddrinfo=fake_dns({})),
            limits=ProxyLimits()))
        client = await trio.open_tcp_stream("127.0.0.1", proxy_port)
        await client.send_all(b"GET http://plain.example/slow HTTP/1.1\r\n"
                              b"Host: plain.example\r\n\r\n")
        with trio.fail_after(10):
            await reached.wait()
        session.cancel_scope.cancel()  # the program exited: its session's services end
    (event,) = [e for e in events if e.stage == "close"]
    assert (event.decision, event.reason, event.host, event.method) == (
        "allow", "session_ended", "plain.example", "GET")
