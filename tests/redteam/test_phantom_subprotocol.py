"""The phantom token in a WebSocket subprotocol never reaches the route's upstream.

The reverse proxy drops every header of a route request that carries the session's phantom
token and replaces the route's own with the real credential; but the subprotocols the
program offered in its WebSocket handshake were offered upstream as they were. A client that
carries its token in a subprotocol (as Kubernetes clients do) sent the phantom to the
upstream, which could then choose it. A real proxy and a real TLS WebSocket upstream that
records its handshake.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
from trio_websocket import WebSocketRequest, connect_websocket, serve_websocket

from tests.credentials.conftest import Pki, RouteProxy
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy
from tests.credentials.test_websocket import GEMINI, REAL

StartProxy = Callable[..., Awaitable[RouteProxy]]


def _k8s(token: str) -> str:
    """How Kubernetes clients carry a bearer token in a subprotocol: base64url, unpadded."""
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize("spelling", [str, _k8s], ids=["verbatim", "base64url"])
async def test_a_subprotocol_that_holds_the_phantom_is_not_offered_upstream(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy,
        spelling: Callable[[str], str]) -> None:
    offers: list[list[str]] = []

    async def upstream(request: WebSocketRequest) -> None:
        offers.append(list(request.proposed_subprotocols))
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol=offered[0] if offered else None)
        await ws.send_message(await ws.get_message())

    server = await nursery.start(functools.partial(
        serve_websocket, upstream, "127.0.0.1", 0, pki.server, handler_nursery=nursery))
    port = int(server.port)
    proxy = await start_route_proxy(
        [(GEMINI, REAL)], pins={"generativelanguage.googleapis.com": f"127.0.0.1:{port}"})
    phantom = proxy.token.reveal()
    ws = await connect_websocket(
        nursery, "127.0.0.1", proxy.port, "/gemini/live", use_ssl=False,
        subprotocols=[f"base64url.bearer.authorization.k8s.io.{spelling(phantom)}", "chat.v1"],
        extra_headers=[(b"x-goog-api-key", phantom.encode())])
    # The upstream accepts the first subprotocol it is offered: before, the phantom's.
    assert ws.subprotocol == "chat.v1"
    assert offers == [["chat.v1"]]
    await ws.send_message("hello")
    assert await ws.get_message() == "hello"
    await ws.aclose()
