"""The pump thread's fresh CONNECT (nonod.proxy._fresh) against trio's path, over real sockets:
the same answers and the same events for every kind of request, and what only the fresh path
changes (no trio task per tunnel)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
import trio

from nonod.proxy import NetworkEvent, ProxyLimits, ProxyPolicy
from tests.proxy.conftest import TOKEN, Proxy, connect_head, read_all, read_head

# Each test with the pump's loop in relay.c and in Python alone: the same bytes, totals and
# events.
pytestmark = pytest.mark.usefixtures("each_pump_loop")

POLICY = ProxyPolicy(hosts=frozenset({"api.github.com", "closed.example", "named.example"}))
StartProxy = Callable[..., Awaitable[Proxy]]


def comparable(event: NetworkEvent) -> dict[str, Any]:
    """An event without what differs between any two runs (its duration)."""
    fields = msgspec.structs.asdict(event)
    del fields["duration_ms"]
    return fields


async def exchange(proxy: Proxy, head: bytes, *, pieces: int = 1) -> bytes:
    """Send ``head`` (in ``pieces``), then a message and end of file; all the proxy sent."""
    stream = await proxy.open()
    step = -(-len(head) // pieces)
    for start in range(0, len(head), step):
        await stream.send_all(head[start:start + step])
        await trio.testing.wait_all_tasks_blocked()
    code, body, after = await read_head(stream)
    if code == 200:
        await stream.send_all(b"ping")
        await stream.send_eof()
    got = body + after + await read_all(stream)
    await stream.aclose()
    return b"%d " % code + got


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


REQUESTS = {
    "allowed": connect_head("api.github.com:443", token=TOKEN),
    "allowed, data after the head": connect_head("api.github.com:443", token=TOKEN) + b"early",
    "allowed, head in pieces": connect_head("api.github.com:443", token=TOKEN),
    "no token": connect_head("api.github.com:443"),
    "wrong token": connect_head("api.github.com:443", token="nope"),
    "not listed": connect_head("example.org:443", token=TOKEN),
    "bad port": connect_head("api.github.com:0", token=TOKEN),
    "a body": connect_head("api.github.com:443", token=TOKEN, extra=b"Content-Length: 3\r\n"),
    "loopback literal": connect_head("127.0.0.1:443", token=TOKEN),
    "upstream refuses": connect_head("closed.example:443", token=TOKEN),
    "name to look up": connect_head("named.example:443", token=TOKEN),
    "not a CONNECT": b"GET http://api.github.com/ HTTP/1.1\r\nHost: api.github.com\r\n"
                     b"Proxy-Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_both_paths_answer_and_report_alike(start_proxy: StartProxy, echo_port: int,
                                                  name: str) -> None:
    pins = {"api.github.com": f"127.0.0.1:{echo_port}",
            "closed.example": f"127.0.0.1:{closed_port()}"}
    dns = {"named.example": ["127.0.0.1"]}  # refused: a loopback answer
    results = []
    for fresh in (True, False):
        proxy = await start_proxy(POLICY, pins=pins, dns=dns, token=TOKEN, fresh=fresh)
        pieces = 3 if "pieces" in name else 1
        answer = await exchange(proxy, REQUESTS[name], pieces=pieces)
        with trio.fail_after(5):
            await proxy.events.wait_for(1, stage="close")
        stats = proxy.server.statistics()
        results.append((answer, [comparable(event) for event in proxy.events],
                        (stats.allowed, stats.denied, stats.accepted)))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    assert results[0][2] == results[1][2]
    assert results[0][1], "every request is reported"


async def test_a_fresh_tunnel_runs_no_trio_task(start_proxy: StartProxy,
                                                echo_port: int) -> None:
    proxies = {fresh: await start_proxy(POLICY, pins={"api.github.com":
                                                      f"127.0.0.1:{echo_port}"}, fresh=fresh)
               for fresh in (True, False)}
    handlers = {}
    for fresh, proxy in proxies.items():
        streams = []
        for _ in range(10):
            stream = await proxy.open()
            await stream.send_all(connect_head("api.github.com:443"))
            assert (await read_head(stream))[0] == 200
            streams.append(stream)
        handlers[fresh] = handler_tasks()
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(5):
            await proxy.events.wait_for(10, stage="close")
    assert handlers == {True: 0, False: 10}


def handler_tasks() -> int:
    """How many of the proxies' connection handler tasks are running."""
    count, nurseries = 0, list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += task.name.endswith("ProxyServer._run_handler")
            nurseries.extend(task.child_nurseries)
    return count


async def test_a_head_that_does_not_come_gets_408_on_time(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(POLICY, limits=ProxyLimits(head_timeout=0.3))
    # The clock starts before the connection exists: the proxy's deadline (from its accept)
    # cannot fall before start + 0.3 however late this task runs after the accept.
    start = trio.current_time()
    stream = await proxy.open()
    await stream.send_all(b"CONNECT api.github")  # and no more
    with trio.fail_after(8):
        answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 408 ")
    # Not before the configured 0.3 s (less 10 ms: the timer's
    # granularity); well before the default head_timeout (10 s), with room for a loaded
    # host's scheduling.
    assert 0.29 <= trio.current_time() - start < 5
    await proxy.events.wait_for(1)
    assert proxy.events[-1].reason == "request_timeout"
    await stream.aclose()


async def test_a_silent_client_gets_408_on_time(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(POLICY, limits=ProxyLimits(head_timeout=0.3))
    stream = await proxy.open()  # sends nothing: the pump waits for its head
    with trio.fail_after(5):
        assert (await read_all(stream)).startswith(b"HTTP/1.1 408 ")
    await stream.aclose()


async def test_cancelling_closes_what_the_pump_holds(echo_port: int) -> None:
    from nonod.proxy import Resolver, serve_proxy

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    events: list[NetworkEvent] = []
    async with trio.open_nursery() as nursery:  # serve_proxy's own, cancelled below
        await nursery.start(functools.partial(
            serve_proxy, listeners[0], policy=POLICY, events=events.append,
            resolver=Resolver(pins={"api.github.com": f"127.0.0.1:{echo_port}"})))
        waiting = await trio.open_tcp_stream("127.0.0.1", port)  # no head yet
        tunnel = await trio.open_tcp_stream("127.0.0.1", port)
        await tunnel.send_all(connect_head("api.github.com:443"))
        assert (await read_head(tunnel))[0] == 200
        nursery.cancel_scope.cancel()
    # serve_proxy has returned: what the pump posted before letting go has been reported
    # and the tunnel's end, as trio's path records a request the session's end cut
    assert [(e.stage, e.reason) for e in events] == [
        ("open", "allowed_host"), ("close", "session_ended")]
    with trio.fail_after(5):
        assert await read_all(waiting) == b""
        assert await read_all(tunnel) == b""
    for stream in (waiting, tunnel):
        await stream.aclose()


async def test_a_head_seen_before_is_planned_once(start_proxy: StartProxy,
                                                  echo_port: int) -> None:
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    good = connect_head("api.github.com:443", token=TOKEN)
    for _ in range(3):
        assert await exchange(proxy, good) == b"200 ping"
    assert proxy.resolver.asked == [("api.github.com", 443)]  # the same bytes, one plan
    # Other bytes are planned (and refused) on their own, whatever came before.
    assert (await exchange(proxy, connect_head("api.github.com:443", token="n0pe"))
            ).startswith(b"407 ")
    assert await exchange(proxy, good + b"early") == b"200 earlyping"
    with trio.fail_after(5):
        await proxy.events.wait_for(5, stage="close")
    # (in any order: the pump's events reach trio's thread a little later than its own)
    assert sorted((e.decision, e.reason) for e in proxy.events if e.stage == "close") == [
        ("allow", "allowed_host")] * 4 + [("deny", "proxy_auth_required")]


async def test_events_keep_the_order_the_client_saw_across_both_paths(
        start_proxy: StartProxy, echo_port: int) -> None:
    """A tunnel of the pump thread, then a refusal of trio's path while it is open, then its
    end, then another refusal: ``events`` in that order (the pump's events wait up to
    ``REPORT_DELAY`` to go to trio's thread; trio's refusals take less)."""
    proxy = await start_proxy(POLICY, pins={"api.github.com": f"127.0.0.1:{echo_port}"},
                              token=TOKEN)
    refused = connect_head("example.org:443", token=TOKEN)
    for _ in range(5):
        del proxy.events[:]
        tunnel = await proxy.open()
        await tunnel.send_all(connect_head("api.github.com:443", token=TOKEN))
        assert (await read_head(tunnel))[0] == 200
        assert (await exchange(proxy, refused)).startswith(b"403")
        await tunnel.send_eof()
        await read_all(tunnel)  # the proxy closed it: its close is on record
        await tunnel.aclose()
        assert (await exchange(proxy, refused)).startswith(b"403")
        with trio.fail_after(5):
            await proxy.events.wait_for(4)
        seen = [(event.host, event.decision, event.stage) for event in proxy.events]
        assert seen == [("api.github.com", "allow", "open"), ("example.org", "deny", "close"),
                        ("api.github.com", "allow", "close"),
                        ("example.org", "deny", "close")]
