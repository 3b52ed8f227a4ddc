"""A user's kept upstream connections, past its share of the host's ephemeral ports.

On the system daemon every connection a user's sessions' proxies serve is counted against
one share per uid (an eighth of the ephemeral ports), since each may hold an upstream
connection on one of them. But a credential route's program connection also keeps an idle
upstream connection for each route it used, and those were not counted: one program
connection that used eight routes to one host held eight upstream connections there on one
place of the share. A user whose profile has many routes to one host held many times its
share of the ports towards that host (its sessions' kept connections bounded only by each
session's ``max_connections``), which every other user's sessions, and the host's own
programs, then lacked (``EADDRNOTAVAIL``).

Now a kept connection takes a place of the share too, and one that finds the share full is
closed instead of kept (its program connection connects again when it needs it, on its own
place). A real proxy with the daemon's share, and a real TLS upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from nonod.proxy._share import UidShare
from tests.credentials.conftest import Pki, RouteProxy, github_route, start_tls_upstream
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy
from tests.credentials.test_reverse import REAL, _connections_to, bearer, echo

StartProxy = Callable[..., Awaitable[RouteProxy]]
UID = 4242


async def test_kept_upstream_connections_count_against_the_users_share(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, echo)
    share = UidShare(cap=4)
    names = [f"r{i}" for i in range(8)]
    proxy = await start_route_proxy([(github_route(name=name), REAL) for name in names],
                                    pins={"api.github.com": f"127.0.0.1:{port}"},
                                    share=(share, UID))
    client = await proxy.client()
    for name in names:
        response = await client.request("GET", f"/{name}/x", [bearer(proxy)])
        assert response.status == 200
        client.next_cycle()
    await trio.testing.wait_all_tasks_blocked()  # the proxy is done with the last request
    # Before: 8 upstream connections held on the one place the program connection took.
    assert _connections_to(port) <= share.cap
    assert not share.take(UID)  # the kept ones hold the rest of the share
    for name in names:  # every route still answers, connecting again where it must
        assert (await client.request("GET", f"/{name}/y", [bearer(proxy)])).status == 200
        client.next_cycle()
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert share.take(UID) and share.take(UID) and share.take(UID) and share.take(UID)
    assert seen.connections > len(names)
