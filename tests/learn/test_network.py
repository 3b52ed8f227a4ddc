"""The recording proxy: what it notes, and that it serves through the proxy library."""

from __future__ import annotations

import base64
import functools

import pytest
import trio

from nonod.learn._network import NetworkRecorder, request_target, serve_recording_proxy
from nonod.proxy import ProxyLimits, ProxyRequest, Resolver

TOKEN = "learn-token-123"
AUTH = b"Proxy-Authorization: Basic " + base64.b64encode(b"nono:" + TOKEN.encode()) + b"\r\n"


@pytest.mark.parametrize(("head", "expected"), [
    (b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n",
     ProxyRequest(mode="connect", host="api.github.com", port=443)),
    (b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n",
     ProxyRequest(mode="connect", host="[2001:db8::1]", port=8443)),
    (b"GET http://Example.COM:8080/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
     ProxyRequest(mode="http", host="Example.COM", port=8080)),
    (b"POST http://example.com/x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n",
     ProxyRequest(mode="http", host="example.com", port=80)),
    (b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", None),
    (b"GET /github/repos HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None),
    (b"GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", None),
    (b"CONNECT example.com:http HTTP/1.1\r\nHost: x\r\n\r\n", None),
    (b"\x16\x03\x01garbage\r\n\r\n", None),
])
def test_request_target(head: bytes, expected: ProxyRequest | None) -> None:
    assert request_target(head, ProxyLimits()) == expected


def test_recorder_notes_names_never_addresses() -> None:
    recorder = NetworkRecorder()
    policy = recorder.policy_for(ProxyRequest(mode="connect", host="API.GitHub.com.", port=443))
    assert policy.hosts == frozenset({"api.github.com"}) and policy.ports == frozenset({443})
    recorder.policy_for(ProxyRequest(mode="connect", host="api.github.com", port=443))
    recorder.policy_for(ProxyRequest(mode="http", host="example.org", port=80))
    literal = recorder.policy_for(ProxyRequest(mode="connect", host="8.8.8.8", port=443))
    assert literal.addresses == frozenset({"8.8.8.8"}) and not literal.hosts
    for host in ("localhost", "metadata.google.internal", "127.0.0.1", "10.1.2.3"):
        refused = recorder.policy_for(ProxyRequest(mode="connect", host=host, port=443))
        assert not refused.hosts and not refused.addresses
    assert [(h.hostname, h.port, h.count) for h in recorder.outbound()] == [
        ("api.github.com", 443, 2), ("example.org", 80, 1)]
    assert [(a.address, a.via) for a in recorder.addresses()] == [("8.8.8.8", "proxy")]
    assert {r.reason for r in recorder.refused()} == {"loopback", "metadata", "private"}
    assert recorder.host_count == 2


async def _upstream(stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(4096)
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await stream.aclose()


async def _echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    data = b""
    with trio.fail_after(10):
        while marker not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    return data


async def test_serves_and_records_through_the_proxy(nursery: trio.Nursery) -> None:
    http = await nursery.start(functools.partial(trio.serve_tcp, _upstream, 0, host="127.0.0.1"))
    echo = await nursery.start(functools.partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
    resolver = Resolver(pins={
        "web.learn.example": f"127.0.0.1:{http[0].socket.getsockname()[1]}",
        "tls.learn.example": f"127.0.0.1:{echo[0].socket.getsockname()[1]}"})
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    recorder = NetworkRecorder()
    await nursery.start(functools.partial(serve_recording_proxy, listeners[0],
                                          recorder=recorder, resolver=resolver,
                                          proxy_token=TOKEN))

    plain = await trio.open_tcp_stream("127.0.0.1", port)
    await plain.send_all(b"GET http://web.learn.example/x HTTP/1.1\r\nHost: web.learn.example\r\n"
                         + AUTH + b"\r\n")
    answer = await _read_until(plain, b"\r\n\r\nok")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")

    tunnel = await trio.open_tcp_stream("127.0.0.1", port)
    # the first bytes of the tunnel arrive with the head (h11's trailing data)
    await tunnel.send_all(b"CONNECT tls.learn.example:443 HTTP/1.1\r\nHost: x\r\n" + AUTH
                          + b"\r\nhello")
    assert b"hello" in await _read_until(tunnel, b"hello")
    await tunnel.send_all(b" again")
    assert await _read_until(tunnel, b" again") == b" again"
    await tunnel.aclose()

    local = await trio.open_tcp_stream("127.0.0.1", port)
    await local.send_all(b"CONNECT localhost:443 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
    assert (await _read_until(local, b"\r\n\r\n")).startswith(b"HTTP/1.1 403")

    unauthenticated = await trio.open_tcp_stream("127.0.0.1", port)
    await unauthenticated.send_all(b"CONNECT tls.learn.example:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _read_until(unauthenticated, b"\r\n\r\n")).startswith(b"HTTP/1.1 407")

    assert [(h.hostname, h.port, h.count) for h in recorder.outbound()] == [
        ("tls.learn.example", 443, 2), ("web.learn.example", 80, 1)]
    assert [(r.host, r.reason) for r in recorder.refused()] == [("localhost", "loopback")]
