"""WebSocket through a credential route: the upstream handshake carries the real credential,
frames go both ways, a reflected secret comes back as the phantom token."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketRequest,
    connect_websocket,
    open_websocket,
    serve_websocket,
)

from nonod.credentials import Route
from nonod.proxy import CredentialInjected, NetworkEvent, ProxyLimits
from tests.credentials.conftest import Pki, RouteProxy

REAL = "AIzaRealGeminiKey-0123456789abcdef"
StartProxy = Callable[..., Awaitable[RouteProxy]]

GEMINI = Route(name="gemini", upstream="https://generativelanguage.googleapis.com",
               credential_key="gemini", inject_header="x-goog-api-key", credential_format="{}")


async def start_ws_upstream(nursery: trio.Nursery, pki: Pki,
                            handshakes: list[list[tuple[bytes, bytes]]],
                            paths: list[str], *, max_message: int = 1 << 20) -> int:
    async def handler(request: WebSocketRequest) -> None:
        handshakes.append([(n.lower(), v) for n, v in request.headers])
        paths.append(request.path)
        if dict(handshakes[-1]).get(b"x-goog-api-key") != REAL.encode():
            await request.reject(401, body=b"bad key " + REAL.encode())
            return
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                message = await ws.get_message()
                if message == "reflect":
                    await ws.send_message(f"your key is {REAL}")
                elif message == "close":
                    await ws.aclose(4001, "bye")
                    return
                else:
                    await ws.send_message(message)
        except ConnectionClosed:
            return

    server = await nursery.start(functools.partial(
        serve_websocket, handler, "127.0.0.1", 0, pki.server, handler_nursery=nursery,
        max_message_size=max_message))
    return int(server.port)


async def open_route(nursery: trio.Nursery, proxy: RouteProxy, path: str,
                     token: str | None = None, *, max_message: int = 1 << 20) -> object:
    headers = [(b"x-goog-api-key", (token or proxy.token.reveal()).encode())]
    return await connect_websocket(nursery, "127.0.0.1", proxy.port, path, use_ssl=False,
                                   subprotocols=["chat.v1"], extra_headers=headers,
                                   max_message_size=max_message)


async def test_websocket_echo_with_the_credential_in_the_handshake(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    handshakes: list[list[tuple[bytes, bytes]]] = []
    paths: list[str] = []
    port = await start_ws_upstream(nursery, pki, handshakes, paths)
    proxy = await start_route_proxy(
        [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"})
    ws = await open_route(nursery, proxy, "/gemini/v1beta/live?alt=ws")
    assert ws.subprotocol == "chat.v1"  # type: ignore[attr-defined]
    await ws.send_message("hello")  # type: ignore[attr-defined]
    assert await ws.get_message() == "hello"  # type: ignore[attr-defined]
    await ws.send_message(b"\x00\x01binary")  # type: ignore[attr-defined]
    assert await ws.get_message() == b"\x00\x01binary"  # type: ignore[attr-defined]
    await ws.send_message("reflect")  # type: ignore[attr-defined]
    reflected = await ws.get_message()  # type: ignore[attr-defined]
    assert reflected == f"your key is {proxy.token.reveal()}"
    await ws.send_message("close")  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()  # type: ignore[attr-defined]
    assert closed.value.reason.code == 4001
    (handshake,) = handshakes
    received = dict(handshake)
    assert received[b"x-goog-api-key"] == REAL.encode()
    assert all(proxy.token.reveal().encode() not in v for _, v in handshake)
    assert paths == ["/v1beta/live?alt=ws"]
    with trio.fail_after(10):
        while not any(isinstance(e, NetworkEvent) for e in proxy.events):
            await trio.testing.wait_all_tasks_blocked()
    injected, event = proxy.events
    assert injected == CredentialInjected(route="gemini", credential="gemini",
                                          source="keychain", into="x-goog-api-key")
    assert isinstance(event, NetworkEvent)
    assert (event.mode, event.decision, event.status, event.route, event.auth) == (
        "websocket", "allow", 101, "gemini", "ok")
    assert event.bytes_out > 0 and event.bytes_in > 0 and event.path == "/v1beta/live"
    written = msgspec.json.encode(proxy.events)
    assert REAL.encode() not in written and proxy.token.reveal().encode() not in written


async def refused(proxy: RouteProxy, path: str, token: str | None = None
                  ) -> ConnectionRejected:
    headers = [(b"x-goog-api-key", (token or proxy.token.reveal()).encode())]
    try:
        async with open_websocket("127.0.0.1", proxy.port, path, use_ssl=False,
                                  extra_headers=headers):
            pytest.fail("the handshake should have been refused")
    except ConnectionRejected as exc:
        return exc
    raise AssertionError("not reached")


async def test_websocket_refusals(nursery: trio.Nursery, pki: Pki,
                                  start_route_proxy: StartProxy) -> None:
    handshakes: list[list[tuple[bytes, bytes]]] = []
    port = await start_ws_upstream(nursery, pki, handshakes, [])
    pins = {"generativelanguage.googleapis.com": f"127.0.0.1:{port}"}
    proxy = await start_route_proxy([(GEMINI, REAL)], pins=pins)
    wrong = await refused(proxy, "/gemini/live", token="f" * 64)
    assert wrong.status_code == 401 and handshakes == []
    # The upstream refuses (it got a wrong key): the program gets the status, not the body.
    liar = await start_route_proxy([(GEMINI, "not-the-key-0123456789")], pins=pins)
    upstream = await refused(liar, "/gemini/live")
    assert upstream.status_code == 401
    assert REAL.encode() not in (upstream.body or b"")
    missing = await start_route_proxy([(GEMINI, None)], pins=pins)
    unavailable = await refused(missing, "/gemini/live")
    assert unavailable.status_code == 503
    assert json.loads(unavailable.body or b"{}")["reason"] == "secret_missing"
    assert len(handshakes) == 1


# Red team (fourth pass): WebSocket messages are held whole in the daemon's memory, outside
# the session's memory limit. Before, one session could relay 256 of them at once, with
# messages of 16 MiB queued on both sides: an echo upstream and a program that never read
# made the daemon hold about 128 MiB per connection, 32 GiB per session.


async def test_a_session_relays_only_so_many_websockets_at_once(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port = await start_ws_upstream(nursery, pki, [], [])
    proxy = await start_route_proxy(
        [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"})
    limit = ProxyLimits().max_websockets
    held = [await open_route(nursery, proxy, "/gemini/live") for _ in range(limit)]
    for ws in held:  # each one relays
        await ws.send_message("ping")  # type: ignore[attr-defined]
        assert await ws.get_message() == "ping"  # type: ignore[attr-defined]
    over = await refused(proxy, "/gemini/live")
    assert over.status_code == 503
    assert json.loads(over.body or b"{}")["reason"] == "too_many_websockets"
    def relayed() -> int:
        return sum(isinstance(e, NetworkEvent) and e.status == 101 for e in proxy.events)

    await held.pop().aclose()  # type: ignore[attr-defined]
    with trio.fail_after(10):
        while not relayed():  # its event is emitted once its place is free
            await trio.testing.wait_all_tasks_blocked()
    again = await open_route(nursery, proxy, "/gemini/live")
    await again.send_message("pong")  # type: ignore[attr-defined]
    assert await again.get_message() == "pong"  # type: ignore[attr-defined]
    denied = [e for e in proxy.events
              if isinstance(e, NetworkEvent) and e.reason == "too_many_websockets"]
    assert denied and all(e.status == 503 for e in denied)


async def test_a_websocket_message_over_the_limit_closes_the_connection(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    limit = ProxyLimits().max_websocket_message_bytes
    port = await start_ws_upstream(nursery, pki, [], [], max_message=4 * limit)
    proxy = await start_route_proxy(
        [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"})
    ws = await open_route(nursery, proxy, "/gemini/live", max_message=4 * limit)
    await ws.send_message(b"x" * limit)  # type: ignore[attr-defined]
    assert len(await ws.get_message()) == limit  # type: ignore[attr-defined]
    await ws.send_message(b"x" * (limit + 1))  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()  # type: ignore[attr-defined]
    assert closed.value.reason.code == 1009


async def test_a_websocket_handshake_is_a_get_that_the_rules_must_allow(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """Red team, ninth pass (held): the rules match the program's method, and the upstream
    handshake always goes out as a GET. A ``POST`` (or ``DELETE``) with ``Upgrade:
    websocket`` to a path the rules allow for that method would make the upstream run a GET
    there, which no rule allows; wsproto refuses the program's handshake first (it must be
    a GET, RFC 6455), so nothing reaches the upstream."""
    handshakes: list[list[tuple[bytes, bytes]]] = []
    paths: list[str] = []
    port = await start_ws_upstream(nursery, pki, handshakes, paths)
    route = msgspec.structs.replace(GEMINI, endpoint_rules=(("POST", "/v1/upload"),
                                                            ("DELETE", "/v1/files/*")))
    proxy = await start_route_proxy(
        [(route, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"})
    for method, path in (("POST", "/gemini/v1/upload"), ("DELETE", "/gemini/v1/files/a")):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nx-goog-api-key: {proxy.token.reveal()}\r\n"
            "Content-Length: 0\r\n\r\n".encode())
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                piece = await stream.receive_some(65536)
                if not piece:
                    break
                answer += piece
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]
    assert paths == []
