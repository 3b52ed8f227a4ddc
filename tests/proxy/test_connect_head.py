"""The CONNECT head read without h11 (nonod.proxy._connect_head): it takes only what h11
takes, reads it as h11 does, and a request it reads gets the very answer and events the h11
path gives (compared over a real socket, where the shortcut applies, and a memory stream,
where it does not)."""

from __future__ import annotations

import base64
from typing import Any

import h11
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nonod.proxy import NetworkEvent, ProxyLimits
from nonod.proxy._connect_head import ESTABLISHED, parse_connect
from tests.proxy.conftest import TOKEN, read_all
from tests.proxy.test_handler import make, talk

AUTH = b"Basic " + base64.b64encode(b"nono:" + TOKEN.encode())
LIMIT = 64 * 1024


def h11_reading(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """Target, headers and trailing data as h11 reads ``data``; None if it does not read a
    whole CONNECT request from it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMIT)
    conn.receive_data(data)
    try:
        request = conn.next_event()
        end = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or not isinstance(end, h11.EndOfMessage):
        return None
    return request.target, list(request.headers), conn.trailing_data[0]


def _mostly(good: list[bytes], odd: list[bytes], size: int) -> st.SearchStrategy[bytes]:
    """Nine times in ten one of ``good``; else one of ``odd`` or random bytes."""
    return st.integers(0, 9).flatmap(
        lambda i: st.sampled_from(good) if i else st.one_of(st.sampled_from(odd),
                                                            st.binary(max_size=size)))


_names = _mostly([b"Host", b"host", b"Proxy-Authorization", b"User-Agent", b"X-A",
                  b"Proxy-Connection"],
                 [b"HOST", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect",
                  b"Upgrade", b"", b"X A", b"X\x00"], 8)
_values = _mostly([b"a", b"x.example:443", b"", b" padded ", b"\ttab\t", b"a  b", b"0"],
                  [b"chunked", b"caf\xc3\xa9", b"a\rb", b"a\nb", b"\x7f", b"a\x00b"], 16)
_endings = _mostly([b"\r\n"], [b"\n", b"\r"], 0)


@st.composite
def connect_heads(draw: st.DrawFn) -> bytes:
    method = draw(_mostly([b"CONNECT"], [b"connect", b"CONNECT "], 8))
    target = draw(_mostly([b"x.example:443", b"[::1]:443", b"a/b:1"],
                          [b"", b"x y:1", b"\xff:1"], 12))
    version = draw(_mostly([b"HTTP/1.1"], [b"HTTP/1.0", b"HTTP/1.10", b"http/1.1", b"HTTP/2"],
                           8))
    head = method + b" " + target + b" " + version + draw(_endings)
    fields = [(b"Host", b"x.example:443")] if draw(st.integers(0, 9)) else []
    fields += draw(st.lists(st.tuples(_names, _values), max_size=5))
    for name, value in draw(st.permutations(fields)):
        head += name + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + value
        head += draw(_endings)
        if draw(st.integers(0, 20)) == 0:
            head += b" folded" + draw(_endings)
    return head + draw(_endings) + draw(st.binary(max_size=8))


@settings(max_examples=2000, deadline=None)
@given(data=connect_heads())
def test_what_it_reads_h11_reads_the_same(data: bytes) -> None:
    head = parse_connect(data, LIMIT)
    if head is None:
        return
    assert h11_reading(data) == (head.target, head.headers, head.trailing)


@pytest.mark.parametrize("data", [
    b"CONNECT x:1 HTTP/1.0\r\nHost: x:1\r\n\r\n",  # only HTTP/1.1
    b"CONNECT x:1 HTTP/1.1\r\n\r\n",  # no Host
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nhost: x:1\r\n\r\n",  # two
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nContent-Length: 0\r\n\r\n",
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nConnection: close\r\n\r\n",
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nExpect: 100-continue\r\n\r\n",
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nX: a\r\n b\r\n\r\n",  # obsolete folding
    b"CONNECT x:1 HTTP/1.1\nHost: x:1\n\n",  # bare line feeds
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nX: caf\xc3\xa9\r\n\r\n",  # not ASCII
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n",  # not complete yet
    b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\nX: " + b"a" * LIMIT + b"\r\n\r\n",  # too large
    b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_anything_else_is_left_to_h11(data: bytes) -> None:
    assert parse_connect(data, LIMIT) is None


def test_a_plain_head() -> None:
    data = (b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n"
            b"Proxy-Authorization:  Basic abc \r\nUser-Agent: curl/8\r\n\r\nearly")
    head = parse_connect(data, LIMIT)
    assert head is not None
    assert (head.target, head.headers, head.trailing) == (
        b"x.example:443",
        [(b"host", b"x.example:443"), (b"proxy-authorization", b"Basic abc"),
         (b"user-agent", b"curl/8")],
        b"early")
    assert h11_reading(data) == (head.target, head.headers, head.trailing)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.next_event()
    conn.next_event()
    assert conn.send(h11.Response(status_code=200, headers=[],
                                  reason=b"Connection established")) == ESTABLISHED


def _seen(events: list[NetworkEvent]) -> list[tuple[Any, ...]]:
    return [(e.stage, e.decision, e.reason, e.status, e.host, e.port, e.bytes_in, e.bytes_out,
             e.address) for e in events]


async def _over_a_socket(data: bytes, **options: Any) -> tuple[bytes, list[NetworkEvent]]:
    """The answer and events when ``data`` arrives on a real socket before the handler
    reads (where the shortcut applies)."""
    server, events, _ = make(**options)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    ours = await listener.accept()
    await listener.aclose()
    await client.send_all(data)
    await client.send_eof()
    await trio.testing.wait_all_tasks_blocked()

    async def serve() -> None:
        try:
            await server.handle(ours)
        finally:
            await ours.aclose()  # as the per-connection boundary does

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        answer = await read_all(client)
    await client.aclose()
    return answer, events


def _head(target: bytes, *extra: bytes, auth: bytes | None = AUTH) -> bytes:
    head = b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n"
    if auth is not None:
        head += b"Proxy-Authorization: " + auth + b"\r\n"
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n"


@pytest.mark.parametrize(("data", "options"), [
    (_head(b"api.github.com:443") + b"early", {}),  # allowed, relayed
    (_head(b"api.github.com:443") + b"early", {"token": TOKEN}),
    (_head(b"evil.com:443"), {}),  # not allowed: 403
    (_head(b"127.0.0.1:443"), {}),  # a special range
    (_head(b"api.github.com/x:443"), {}),  # a bad target: 400
    (_head(b"api.github.com:443", auth=None), {"token": TOKEN}),  # 407, via h11
    (_head(b"api.github.com:443", auth=b"Bearer wrong"), {"token": TOKEN}),
    (_head(b"api.github.com:443", b"A: 1", b"B: 2"),
     {"limits": ProxyLimits(max_headers=2)}),  # 431, via h11
    (_head(b"api.github.com:1"), {"pins": {"api.github.com": "127.0.0.1:1"}}),  # 502
])
async def test_the_shortcut_answers_as_h11_does(data: bytes, options: dict[str, Any],
                                                echo_port: int) -> None:
    if "pins" not in options:
        options["pins"] = {"api.github.com": f"127.0.0.1:{echo_port}"}
    assert parse_connect(data, LIMIT) is not None
    fast, fast_events = await _over_a_socket(data, **options)
    server, events, _ = make(**options)
    assert fast == await talk(server, [data])  # a memory stream: always h11
    assert _seen(fast_events) == _seen(events)
    assert fast_events


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=connect_heads())
async def test_fuzzed_connect_heads_get_only_our_errors(data: bytes,
                                                        autojump_clock: Any) -> None:
    """Over a real socket (the shortcut's side), whatever CONNECT head arrives gets one of
    our answers or a closed connection, and nothing escapes the handler."""
    answer, events = await _over_a_socket(data)
    if answer:
        assert answer.startswith(b"HTTP/1.1 ")
        assert int(answer.split(b" ", 2)[1]) in {200, 400, 403, 405, 407, 408, 431, 502, 504}
    assert all(e.reason != "internal_error" for e in events)
