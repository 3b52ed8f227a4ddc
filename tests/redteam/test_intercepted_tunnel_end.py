"""An intercepted tunnel still open when its session ends has a record of its own.

A CONNECT to an intercepted credential route's host is answered by the proxy itself (TLS as
that host, with the session's CA) and each request inside gets an ``intercept`` record; the
tunnel itself gets a ``connect`` record (``intercepted``) once it ends. A tunnel the
session's end cut (its program exits, is stopped, or runs out of time with the tunnel open)
had none: the audit could not say that the tunnel was there, for how long, nor that it was
cut. A real TLS upstream, a real client trusting only the session's CA, the proxy cancelled
as a session's services are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from nonod.credentials import SessionCA
from nonod.proxy import NetworkEvent
from tests.credentials.conftest import Pki, RouteProxy, github_route, start_tls_upstream
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy
from tests.intercept.test_intercept_proxy import REAL, _echo, connect
from tests.proxy.conftest import connect_head, read_head

StartRouteProxy = Callable[..., Awaitable[RouteProxy]]


async def intercepting(nursery: trio.Nursery, session: trio.Nursery, pki: Pki,
                       start_route_proxy: StartRouteProxy) -> tuple[RouteProxy, SessionCA]:
    """A proxy in ``session`` intercepting ``api.github.com`` (a TLS echo upstream)."""
    port, _ = await start_tls_upstream(nursery, pki.server, _echo)
    ca = SessionCA(["api.github.com"])
    proxy = await start_route_proxy([(github_route(), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"},
                                    intercept=ca, within=session)
    return proxy, ca


async def test_an_intercepted_tunnel_cut_by_the_sessions_end_is_recorded(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartRouteProxy) -> None:
    async with trio.open_nursery() as session:
        proxy, ca = await intercepting(nursery, session, pki, start_route_proxy)
        status, client = await connect(proxy, ca, "api.github.com")
        assert status == 200
        answer = await client.request("GET", "/user")
        assert answer.status == 200
        client.next_cycle()  # the tunnel stays open, waiting for its next request
        await trio.testing.wait_all_tasks_blocked()
        session.cancel_scope.cancel()  # the program exited: its session's services end
    tunnels = [(e.decision, e.host, e.port, e.reason) for e in proxy.events
               if isinstance(e, NetworkEvent) and e.mode == "connect"]
    assert tunnels == [("allow", "api.github.com", 443, "session_ended")]
    assert [(e.path, e.reason) for e in proxy.events
            if isinstance(e, NetworkEvent) and e.mode == "intercept"] == [("/user", "forwarded")]
    await client.aclose()


async def test_an_intercepted_tunnel_cut_in_its_handshake_is_recorded(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartRouteProxy) -> None:
    """The same when the session ends before the client's TLS handshake is done."""
    async with trio.open_nursery() as session:
        proxy, _ = await intercepting(nursery, session, pki, start_route_proxy)
        client = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await client.send_all(connect_head("api.github.com:443", token=proxy.token.reveal()))
        assert (await read_head(client))[0] == 200  # and no TLS after it
        await trio.testing.wait_all_tasks_blocked()
        session.cancel_scope.cancel()
    assert [(e.mode, e.reason) for e in proxy.events if isinstance(e, NetworkEvent)] == [
        ("connect", "session_ended")]
    await client.aclose()
