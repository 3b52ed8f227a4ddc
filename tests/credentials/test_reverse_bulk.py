"""Large response bodies through a credential route: a body with a Content-Length of
256 KiB or more is read past h11, a MiB at a time into one reused buffer. The scrubbing, the
framing and the keep-alive of the upstream connection are those of the h11 path."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing

from nonod.proxy import NetworkEvent, ProxyLimits, _reverse
from nonod.proxy._offload import Stop, run_stoppable
from nonod.proxy._reverse import BODY_WORKERS
from tests.credentials.conftest import (
    Client,
    Pki,
    Responder,
    Seen,
    UpstreamRequest,
    github_route,
    serve_http,
    start_tls_upstream,
)
from tests.credentials.test_reverse import REAL, StartProxy, bearer, github, wait_for_events

MIB = 1 << 20
SECRET = REAL.encode()


def body_with_secrets(size: int, places: list[int]) -> bytes:
    body = bytearray(os.urandom(size))
    for at in places:
        body[at:at + len(SECRET)] = SECRET
    return bytes(body)


def sized(body: bytes, *, piece: int, headers: list[tuple[bytes, bytes]] | None = None
          ) -> Callable[[UpstreamRequest, Responder], Awaitable[None]]:
    async def app(request: UpstreamRequest, respond: Responder) -> None:
        await respond.start(200, [(b"Content-Length", str(len(body)).encode()),
                                  *(headers or [])])
        for start in range(0, len(body), piece):
            await respond.data(body[start:start + piece])
            # Let the proxy read what there is: its reads end at many different places.
            await trio.testing.wait_all_tasks_blocked()
        await respond.end()

    return app


async def body_until_cut(client: Client) -> int:
    """How many body bytes arrive before the connection closes without the last chunk."""
    got = 0
    with pytest.raises(h11.RemoteProtocolError):
        while True:
            event = await client.event()
            assert isinstance(event, h11.Data), event
            got += len(event.data)
    return got


@pytest.mark.parametrize("piece", [700_001, 3 * MIB])
async def test_a_large_body_is_scrubbed_across_every_read_and_the_upstream_kept(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, piece: int) -> None:
    # The secret where the head's read ends, across the 1 MiB read boundary, in the middle,
    # across a piece boundary, and as the last bytes of the body.
    size = 3 * MIB + 12345
    body = body_with_secrets(size, [0, MIB - 7, MIB + 300_000, 700_001 - 20,
                                    size - len(SECRET)])
    proxy, seen = await github(nursery, pki, start_route_proxy, sized(body, piece=piece))
    expected = body.replace(SECRET, proxy.token.reveal().encode())
    client = await proxy.client()
    for _ in range(2):
        response = await client.request("GET", "/github/big", [bearer(proxy)])
        assert response.status == 200
        assert response.header(b"transfer-encoding") == b"chunked"  # the length changed
        assert SECRET not in response.body
        assert response.body == expected
        client.next_cycle()
    assert seen.connections == 1  # the upstream connection carried both
    await wait_for_events(proxy, 2)
    events = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert [(e.reason, e.status, e.bytes_in) for e in events] == [
        ("forwarded", 200, len(expected))] * 2


async def test_a_large_body_on_a_closing_connection_is_not_reused(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    body = body_with_secrets(MIB, [MIB // 2])
    app = sized(body, piece=MIB, headers=[(b"Connection", b"close")])
    proxy, seen = await github(nursery, pki, start_route_proxy, app)
    client = await proxy.client()
    for _ in range(2):
        response = await client.request("GET", "/github/big", [bearer(proxy)])
        assert response.body == body.replace(SECRET, proxy.token.reveal().encode())
        client.next_cycle()
    assert seen.connections == 2


async def test_a_large_body_cut_short_ends_the_client_connection(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    sent = 600_000

    async def short(request: UpstreamRequest, respond: Responder) -> None:
        await respond.start(200, [(b"Content-Length", str(2 * MIB).encode())])
        await respond.stream.send_all(bytes(sent))
        await respond.stream.aclose()

    proxy, _ = await github(nursery, pki, start_route_proxy, short)
    client = await proxy.client()
    await client.send("GET", "/github/big", [bearer(proxy)])
    assert (await client.head()).status_code == 200
    assert await body_until_cut(client) == sent
    await wait_for_events(proxy, 1)
    (event,) = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert (event.decision, event.reason, event.status, event.bytes_in) == (
        "allow", "upstream_error", 200, sent)


async def test_a_program_that_leaves_mid_body_stops_the_upstream_read(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    body = bytes(8 * MIB)
    proxy, seen = await github(nursery, pki, start_route_proxy, sized(body, piece=MIB))
    client = await proxy.client()
    await client.send("GET", "/github/big", [bearer(proxy)])
    assert (await client.head()).status_code == 200
    event = await client.event()
    assert isinstance(event, h11.Data)
    await client.aclose()  # gone, with most of the body still to come
    await wait_for_events(proxy, 1)
    (network,) = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert (network.decision, network.reason, network.status) == ("allow", "client_gone", 200)
    assert network.bytes_in < len(body)  # (a piece cut off mid-send is not counted)
    assert seen.connections == 1


@pytest.mark.parametrize("size", [100, MIB])  # read by h11; read past h11 (bulk)
async def test_an_upstream_that_sends_more_than_its_response_is_not_asked_again(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, size: int) -> None:
    planted = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nplanted"

    async def and_more(request: UpstreamRequest, respond: Responder) -> None:
        if request.target == b"/first":
            head = respond.conn.send(h11.Response(
                status_code=200, headers=[(b"Content-Length", str(size).encode())])) or b""
            body = respond.conn.send(h11.Data(data=b"x" * size)) or b""
            end = respond.conn.send(h11.EndOfMessage()) or b""
            # The answer, and an answer to a request nobody made yet, in one write.
            await respond.stream.send_all(head + body + end + planted)
        else:
            await respond.whole(200, b"asked for")

    proxy, seen = await github(nursery, pki, start_route_proxy, and_more)
    client = await proxy.client()
    first = await client.request("GET", "/github/first", [bearer(proxy)])
    assert (first.status, len(first.body)) == (200, size)
    client.next_cycle()
    second = await client.request("GET", "/github/second", [bearer(proxy)])
    assert (second.status, second.body) == (200, b"asked for")
    assert seen.connections == 2  # the first connection was not reused


async def test_an_upstream_silent_mid_body_is_given_up_after_the_idle_timeout(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """The body's worker waits on the real clock: a silence of idle_timeout ends the body
    as a failure of the upstream, after everything it sent before."""
    sent = 300_000
    never = trio.Event()

    async def stalls(request: UpstreamRequest, respond: Responder) -> None:
        await respond.start(200, [(b"Content-Length", str(2 * MIB).encode())])
        await respond.stream.send_all(bytes(sent))
        await never.wait()

    proxy, _ = await github(nursery, pki, start_route_proxy, stalls,
                            limits=ProxyLimits(idle_timeout=0.5))
    client = await proxy.client()
    await client.send("GET", "/github/big", [bearer(proxy)])
    assert (await client.head()).status_code == 200
    with trio.fail_after(10):
        assert await body_until_cut(client) == sent
    await wait_for_events(proxy, 1)
    (event,) = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert (event.reason, event.status, event.bytes_in) == ("upstream_error", 200, sent)


async def test_a_proxy_stopped_mid_body_lets_go_at_once(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """Stopping the proxy (its session ends) mid-body stops the body's worker at once and
    closes the program's connection, although nothing else would end it: the upstream
    lives on and its body has no end, and the program reads on (the worker need never
    wait) after a pause (the worker waited, as it would have for idle_timeout, 300 s)."""
    block = bytes(MIB)

    async def endless(request: UpstreamRequest, respond: Responder) -> None:
        await respond.start(200, [(b"Content-Length", str(1 << 40).encode())])
        while True:
            await respond.stream.send_all(block)

    port, _ = await start_tls_upstream(nursery, pki.server, endless)
    async with trio.open_nursery() as session:
        proxy = await start_route_proxy([(github_route(), REAL)],
                                        pins={"api.github.com": f"127.0.0.1:{port}"},
                                        within=session)
        client = await proxy.client()
        await client.send("GET", "/github/big", [bearer(proxy)])
        assert (await client.head()).status_code == 200
        await trio.testing.wait_all_tasks_blocked()  # the program reads nothing for now
        session.cancel_scope.cancel()
        with trio.fail_after(5):
            while await client.stream.receive_some(MIB):  # what was in flight, then the end
                pass


async def test_a_large_body_from_a_plain_http_upstream_is_scrubbed(
        nursery: trio.Nursery, start_route_proxy: StartProxy) -> None:
    """A loopback upstream without TLS: the worker reads its socket directly."""
    size = 2 * MIB + 777
    body = body_with_secrets(size, [5, MIB - 3, size - len(SECRET)])
    seen = Seen()
    listeners = await nursery.start(functools.partial(
        trio.serve_tcp, functools.partial(serve_http, sized(body, piece=MIB), seen), 0,
        host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    route = github_route(name="local", upstream=f"http://localhost:{port}")
    proxy = await start_route_proxy([(route, REAL)], pins={"localhost": f"127.0.0.1:{port}"})
    client = await proxy.client()
    for _ in range(2):
        response = await client.request("GET", "/local/big", [bearer(proxy)])
        assert response.status == 200
        assert response.body == body.replace(SECRET, proxy.token.reveal().encode())
        client.next_cycle()
    assert seen.connections == 1


async def test_with_every_body_worker_busy_a_large_body_goes_by_the_event_loop(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker threads are bounded per process: past the bound, a large body is moved by the
    event loop's tasks, scrubbed the same, and no worker seat is left taken."""
    jobs: list[object] = []

    async def counted(work: Callable[[Stop], None]) -> None:
        jobs.append(work)
        await run_stoppable(work)

    monkeypatch.setattr(_reverse, "run_stoppable", counted)
    monkeypatch.setattr(BODY_WORKERS, "taken", BODY_WORKERS.count)  # all busy elsewhere
    body = body_with_secrets(MIB + 99, [0, MIB // 2, MIB + 99 - len(SECRET)])
    proxy, _ = await github(nursery, pki, start_route_proxy, sized(body, piece=MIB))
    client = await proxy.client()
    response = await client.request("GET", "/github/big", [bearer(proxy)])
    assert response.body == body.replace(SECRET, proxy.token.reveal().encode())
    assert (len(jobs), BODY_WORKERS.taken) == (0, BODY_WORKERS.count)
    monkeypatch.setattr(BODY_WORKERS, "taken", 0)
    client.next_cycle()
    response = await client.request("GET", "/github/big", [bearer(proxy)])
    assert response.body == body.replace(SECRET, proxy.token.reveal().encode())
    assert (len(jobs), BODY_WORKERS.taken) == (1, 0)  # on a worker, its seat given back
