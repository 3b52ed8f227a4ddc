"""One connection's handler, driven over memory streams: what a client sends, what it gets.

The handler is called directly (not through the per-connection boundary), so an exception
that escapes it fails the test. Upstreams, where one is needed, are real local sockets.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.proxy import NetworkEvent, ProxyLimits, ProxyPolicy, ProxyServer, Reason
from tests.proxy.conftest import TOKEN, RecordingResolver, fake_dns, read_all

POLICY = ProxyPolicy(hosts=frozenset({"api.github.com", "rebind.example"}))
OUR_STATUSES = {400, 403, 405, 407, 408, 431, 501, 502, 503, 504}


def make(policy: ProxyPolicy = POLICY, *, pins: dict[str, str] | None = None,
         limits: ProxyLimits | None = None, token: str | None = None,
         ) -> tuple[ProxyServer, list[NetworkEvent], RecordingResolver]:
    events: list[NetworkEvent] = []
    resolver = RecordingResolver(pins=pins,
                                 getaddrinfo=fake_dns({"rebind.example": ["127.0.0.1"]}))
    server = ProxyServer(policy=policy, resolver=resolver, events=events.append,
                         limits=limits or ProxyLimits(), proxy_token=token, zero_copy=True)
    return server, events, resolver


async def talk(server: ProxyServer, chunks: Sequence[bytes], *, eof: bool = True) -> bytes:
    """Send ``chunks`` (then EOF), return everything the proxy answered until it closed."""
    client, ours = trio.testing.memory_stream_pair()
    answer = b""

    async def serve() -> None:
        try:
            await server.handle(ours)
        finally:
            await ours.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            for chunk in chunks:
                await client.send_all(chunk)
            if eof:
                await client.send_eof()
        except trio.BrokenResourceError:
            pass  # the proxy answered and closed before reading everything
        answer = await read_all(client)
    return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def connect(target: str = "api.github.com:443", *, extra: bytes = b"",
            auth: bytes | None = None) -> bytes:
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
    if auth is not None:
        head += b"Proxy-Authorization: " + auth + b"\r\n"
    return head + b"\r\n" + extra


async def test_tunnel_relays_and_forwards_trailing_data_first(echo_port: int) -> None:
    server, events, _ = make(pins={"api.github.com": f"127.0.0.1:{echo_port}"})
    answer = await talk(server, [connect(extra=b"early bytes")])
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nearly bytes"
    opened, closed = events
    assert (opened.stage, opened.decision, opened.reason) == ("open", "allow", "allowed_host")
    assert (closed.stage, closed.status, closed.bytes_out, closed.bytes_in) == (
        "close", 200, 11, 11)
    assert closed.address == f"127.0.0.1:{echo_port}"


async def test_byte_by_byte_gives_the_same_answer(echo_port: int) -> None:
    server, _, _ = make(pins={"api.github.com": f"127.0.0.1:{echo_port}"})
    data = connect(extra=b"x")
    answer = await talk(server, [data[i:i + 1] for i in range(len(data))])
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\nx"


@pytest.mark.parametrize(
    ("target", "reason"),
    [("evil.com:443", Reason.NOT_ALLOWED), ("169.254.169.254:80", Reason.LINK_LOCAL),
     ("127.0.0.1:443", Reason.LOOPBACK), ("[::1]:443", Reason.LOOPBACK),
     ("0x7f000001:443", Reason.LOOPBACK), ("2130706433:443", Reason.LOOPBACK),
     ("[::ffff:127.0.0.1]:443", Reason.LOOPBACK), ("api.github.com:22",
                                                   Reason.PORT_NOT_ALLOWED),
     ("metadata.google.internal:80", Reason.METADATA)],
)
async def test_refused_targets_get_403_and_no_lookup(target: str, reason: Reason) -> None:
    server, events, resolver = make()
    answer = await talk(server, [connect(target)])
    assert status(answer) == 403
    assert answer.endswith(f"({reason.value})\n".encode())
    assert resolver.asked == []  # no DNS query for a refused name
    assert [(e.decision, e.reason, e.status) for e in events] == [("deny", reason.value, 403)]


async def test_an_allowed_name_resolving_to_loopback_is_refused() -> None:
    server, events, resolver = make()
    answer = await talk(server, [connect("rebind.example:443")])
    assert status(answer) == 403
    assert resolver.asked == [("rebind.example", 443)]
    assert events[0].reason == "loopback"


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01\x02\x03\r\n\r\n", b"GET\r\n\r\n", b"HELLO WORLD\r\n\r\n",
     b"CONNECT api.github.com:443\r\nX: y HTTP/1.1\r\nHost: a\r\n\r\n",
     b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n",
     b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nBad Name: c\r\n\r\n",
     b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n",
     b"CONNECT api.github.com:443 HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
     b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
     b"POST http://api.github.com/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n",
     b"POST http://api.github.com/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     b"Content-Length: 4\r\n\r\n",
     b"POST http://api.github.com/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
     b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
     b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     b"GET https://api.github.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
     b"GET http://user:pw@api.github.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
     b"CONNECT api.github.com HTTP/1.1\r\nHost: a\r\n\r\n",
     b"CONNECT user@api.github.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"],
)
async def test_malformed_requests_get_400(data: bytes) -> None:
    server, events, resolver = make()
    answer = await talk(server, [data])
    assert status(answer) == 400
    assert resolver.asked == []
    assert [e.status for e in events] == [400]


async def test_trace_is_refused() -> None:
    server, _, _ = make()
    answer = await talk(server, [b"TRACE http://api.github.com/ HTTP/1.1\r\nHost: a\r\n\r\n"])
    assert status(answer) == 405


async def test_a_huge_header_gets_431() -> None:
    server, events, _ = make()
    head = b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\nX-Big: "
    answer = await talk(server, [head, b"a" * (1 << 20), b"\r\n\r\n"])
    assert status(answer) == 431
    assert events[0].reason == "head_too_large"


async def test_too_many_headers_get_431() -> None:
    server, _, _ = make(limits=ProxyLimits(max_headers=10))
    head = b"CONNECT api.github.com:443 HTTP/1.1\r\nHost: a\r\n"
    answer = await talk(server, [head + b"".join(b"X-%d: 1\r\n" % i for i in range(10))
                                 + b"\r\n"])
    assert status(answer) == 431


async def test_a_slow_head_gets_408(autojump_clock: trio.abc.Clock) -> None:
    server, events, _ = make(limits=ProxyLimits(head_timeout=10))
    start = trio.current_time()
    answer = await talk(server, [b"CONNECT api.github.com:443 HTTP/1.1\r\nHo"], eof=False)
    assert status(answer) == 408
    assert trio.current_time() - start == pytest.approx(10)
    assert events[0].reason == "request_timeout"


async def test_a_client_that_leaves_silently_gets_no_event() -> None:
    server, events, _ = make()
    assert await talk(server, []) == b""
    assert events == []


@pytest.mark.parametrize(
    ("auth", "expected"),
    [(None, 407), (b"Basic " + base64.b64encode(b"nono:wrong"), 407),
     (b"Bearer wrong", 407), (b"Basic " + base64.b64encode(f"nono:{TOKEN}".encode()), 403),
     (f"Bearer {TOKEN}".encode(), 403)],
)
async def test_proxy_token(auth: bytes | None, expected: int) -> None:
    # With the right token the request reaches the policy (403 for evil.com); without, 407.
    server, events, _ = make(token=TOKEN)
    answer = await talk(server, [connect("evil.com:443", auth=auth)])
    assert status(answer) == expected
    if expected == 407:
        assert b'Proxy-Authenticate: Basic realm="nono"' in answer
    assert TOKEN not in repr(events) and TOKEN.encode() not in answer


# Fuzzing the request head: whatever arrives, the handler answers with one of our statuses
# (or closes), and nothing escapes it.

_methods = st.sampled_from([b"CONNECT", b"GET", b"POST", b"TRACE", b"PUT", b"G\x00T", b""])
_targets = st.one_of(
    st.sampled_from([b"api.github.com:443", b"evil.com:443", b"[::1]:443", b"2130706433:80",
                     b"http://api.github.com/", b"http://evil.com/x", b"/", b"*",
                     b"rebind.example:443"]),
    st.binary(max_size=40),
)
_header = st.tuples(
    st.one_of(st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding",
                               b"Proxy-Authorization", b"Connection", b"Expect"]),
              st.binary(max_size=12)),
    st.one_of(st.sampled_from([b"a", b"5", b"chunked", b"-1", b"close", b"100-continue"]),
              st.binary(max_size=30)),
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method, target = draw(_methods), draw(_targets)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"", b"HTTP/1.1 x"]))
    lines = [method + b" " + target + b" " + version]
    lines += [name + b": " + value for name, value in draw(st.lists(_header, max_size=6))]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head + draw(st.binary(max_size=20))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=request_heads(), split=st.integers(min_value=1, max_value=64))
async def test_fuzzed_heads_get_only_our_errors(head: bytes, split: int,
                                                autojump_clock: Any) -> None:
    server, events, resolver = make(pins=None)
    chunks = [head[i:i + split] for i in range(0, len(head), split)]
    answer = await talk(server, chunks)
    if answer:
        assert status(answer) in OUR_STATUSES
    assert all(e.reason != "internal_error" for e in events)
    assert all(host != "evil.com" for host, _ in resolver.asked)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
async def test_random_bytes_get_only_our_errors(data: bytes, autojump_clock: Any) -> None:
    server, _, _ = make()
    answer = await talk(server, [data])
    if answer:
        assert status(answer) in OUR_STATUSES
