"""A tunnel still open when its session ends: what it moved is in the audit record.

A program that keeps its tunnel open until its session ends (it exits, is stopped, or its
time is up) has its proxy cancelled with the tunnel in the middle of a transfer. Before, the
pump thread's fresh CONNECT reported no ``close`` at all for it (only its ``open``, with no
byte count), and trio's path reported ``session_ended`` with 0 bytes: an upload of any size
out of the session left an audit trail that said nothing of it. Real sockets, a real
upstream that counts what it receives, the proxy cancelled as a session's services are.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from nonod.proxy import NetworkEvent, ProxyPolicy, Resolver, serve_proxy
from nonod.proxy._resolve import Resolved
from tests.credentials.conftest import Pki, RouteProxy, pki, start_route_proxy  # noqa: F401 - fixtures
from tests.credentials.test_websocket import GEMINI, REAL, open_route, start_ws_upstream
from tests.proxy.conftest import (
    Proxy,
    connect_head,
    echo_port,  # noqa: F401 - a fixture
    read_head,
    start_proxy,  # noqa: F401 - a fixture
    start_server,
)

POLICY = ProxyPolicy(hosts=frozenset({"sink.example"}))
StartRouteProxy = Callable[..., Awaitable[RouteProxy]]
StartProxy = Callable[..., Awaitable[Proxy]]
SENT = 3 << 20  # more than one pump turn's worth of pipe and socket buffers


@pytest.mark.parametrize(("fresh", "zero_copy"), [(True, True), (False, True), (False, False)],
                         ids=["fresh", "trio", "copy"])
async def test_a_tunnel_cut_by_the_sessions_end_is_recorded_with_its_bytes(
        nursery: trio.Nursery, start_proxy: StartProxy,  # noqa: F811
        fresh: bool, zero_copy: bool) -> None:
    received = 0
    enough = trio.Event()

    async def sink(stream: trio.SocketStream) -> None:
        nonlocal received
        async for data in stream:
            received += len(data)
            if received >= SENT:
                enough.set()
        await trio.sleep_forever()

    port = await start_server(nursery, sink)
    async with trio.open_nursery() as session:
        proxy = await start_proxy(POLICY, pins={"sink.example": f"127.0.0.1:{port}"},
                                  fresh=fresh, zero_copy=zero_copy, within=session)
        client = await proxy.open()
        await client.send_all(connect_head("sink.example:443"))
        assert (await read_head(client))[0] == 200
        await client.send_all(b"x" * SENT)
        with trio.fail_after(10):
            await enough.wait()
        session.cancel_scope.cancel()  # the program exited: its session's services end
    closes = [e for e in proxy.events if e.stage == "close"]
    assert [(e.decision, e.reason, e.host) for e in closes] == [
        ("allow", "session_ended", "sink.example")]
    assert closes[0].bytes_out == received >= SENT
    await client.aclose()


async def test_a_websocket_cut_by_the_sessions_end_is_recorded_with_its_bytes(
        nursery: trio.Nursery, pki: Pki,  # noqa: F811
        start_route_proxy: StartRouteProxy) -> None:  # noqa: F811
    """The same for a credential route's WebSocket: its messages out, before the session's
    end, were recorded as 0 bytes."""
    port = await start_ws_upstream(nursery, pki, [], [])
    message = "m" * 60_000
    async with trio.open_nursery() as session:
        proxy = await start_route_proxy(
            [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"},
            within=session)
        ws = await open_route(nursery, proxy, "/gemini/v1beta/live")
        for _ in range(20):
            await ws.send_message(message)  # type: ignore[attr-defined]
            assert await ws.get_message() == message  # type: ignore[attr-defined]
        session.cancel_scope.cancel()  # the program exited: its session's services end
    (event,) = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert (event.mode, event.decision, event.reason) == ("websocket", "allow", "session_ended")
    assert event.bytes_out == event.bytes_in == 20 * len(message)


async def test_a_tunnel_waiting_for_its_first_bytes_when_the_session_ends_is_recorded(
        nursery: trio.Nursery, echo_port: int) -> None:  # noqa: F811
    """A tunnel to a looked-up name holds the client's first bytes until it can judge them
    (the SNI check); the session's end there left no ``close`` (the cancellations of its two
    waits came out as a group the handler did not catch)."""

    class LookedUp(Resolver):  # a name looked up (not pinned) that answers the echo server
        async def resolve(self, host: str, port: int) -> Resolved:
            return Resolved(host=host, addresses=(("127.0.0.1", echo_port),))

    events: list[NetworkEvent] = []
    async with trio.open_nursery() as session:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await session.start(functools.partial(
            serve_proxy, listeners[0], policy=POLICY, resolver=LookedUp(),
            events=events.append))
        client = await trio.open_tcp_stream("127.0.0.1",
                                            listeners[0].socket.getsockname()[1])
        await client.send_all(connect_head("sink.example:443"))
        assert (await read_head(client))[0] == 200
        await client.send_all(b"\x16\x03\x01")  # the start of a TLS record: judged later
        await trio.testing.wait_all_tasks_blocked()
        session.cancel_scope.cancel()
    closes = [e for e in events if e.stage == "close"]
    assert [(e.decision, e.reason) for e in closes] == [("allow", "session_ended")]
    await client.aclose()
