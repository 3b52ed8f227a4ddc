"""The proxy's interception path on real sockets: a client that CONNECTs through the proxy and
speaks TLS (trusting only the session CA) to an intercepted route's host, and a TLS fake
upstream (a private CA, reached through a resolver pin)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import pytest
import trio
import trio.testing

from nonod.credentials import CredentialError, Route, SessionCA, session_routes
from nonod.policy import NetworkPolicy, TlsIntercept
from nonod.proxy import CredentialInjected, NetworkEvent, ProxyPolicy
from tests.credentials.conftest import (
    Client,
    Pki,
    Responder,
    RouteProxy,
    Seen,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy

REAL = "ghp_real_intercept_0123456789"


async def _echo(request: UpstreamRequest, respond: Responder) -> None:
    await respond.whole(200, b"saw " + (request.header(b"authorization") or b"-") +
                        b" for " + request.target)


Intercepting = Callable[[Route, str | None], Awaitable[tuple[RouteProxy, SessionCA, Seen]]]


@pytest.fixture
def intercepting(nursery: trio.Nursery, pki: Pki, start_route_proxy: Callable[
        ..., Awaitable[RouteProxy]]) -> Intercepting:
    """Start a TLS fake upstream for ``api.github.com`` (echoing what it got) and a proxy
    that intercepts it with ``route`` (and its secret); their state and the session CA."""
    async def start(route: Route, value: str | None
                    ) -> tuple[RouteProxy, SessionCA, Seen]:
        port, seen = await start_tls_upstream(nursery, pki.server, _echo)
        ca = SessionCA(["api.github.com"])
        proxy = await start_route_proxy([(route, value)],
                                        pins={"api.github.com": f"127.0.0.1:{port}"},
                                        intercept=ca)
        return proxy, ca, seen
    return start


async def connect(proxy: RouteProxy, ca: SessionCA | None, host: str, port: int = 443,
                  *, auth: bool = True) -> tuple[int, Client]:
    """CONNECT through the proxy; on 200, TLS as ``host`` trusting ``ca`` only."""
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    headers = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if auth:
        basic = base64.b64encode(f"nono:{proxy.token.reveal()}".encode()).decode()
        headers += f"Proxy-Authorization: Basic {basic}\r\n"
    await stream.send_all((headers + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        if not data:
            break
        head += data
    status = int(head.split(b" ", 2)[1])
    if status != 200 or ca is None:
        await stream.aclose()
        return status, Client(stream)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.cert_pem().decode())
    tls = trio.SSLStream(stream, context, server_hostname=host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError:
        await trio.aclose_forcefully(stream)  # as a client that gives up hangs up
        raise
    return status, Client(tls)  # type: ignore[arg-type]


def intercepts(events: Sequence[object]) -> list[tuple[str, str, str, str, int]]:
    return [(e.method, e.host, e.path, e.reason, e.status) for e in events
            if isinstance(e, NetworkEvent) and e.mode == "intercept"]


async def test_requests_inside_the_tunnel_get_the_real_token_over_one_kept_alive_connection(
        intercepting: Intercepting) -> None:
    proxy, ca, seen = await intercepting(
        github_route(endpoint_rules=(("GET", "/user"), ("GET", "/repos/*/*"))), REAL)
    status, client = await connect(proxy, ca, "api.github.com")
    assert status == 200
    phantom = proxy.token.reveal()
    first = await client.request("GET", "/user", [("Authorization", f"Bearer {phantom}")])
    assert (first.status, first.body) == (200, f"saw Bearer {phantom} for /user".encode())
    client.next_cycle()
    second = await client.request("GET", "/repos/octo/hello?per_page=1")  # no token at all
    assert second.status == 200
    client.next_cycle()
    refused = await client.request("DELETE", "/repos/octo/hello")
    assert refused.status == 403 and b"endpoint_denied" in refused.body
    await client.aclose()
    assert [r.header(b"authorization") for r in seen.requests] == [f"Bearer {REAL}".encode()] * 2
    assert [r.target for r in seen.requests] == [b"/user", b"/repos/octo/hello?per_page=1"]
    assert seen.connections == 1
    assert intercepts(proxy.events) == [
        ("GET", "api.github.com", "/user", "forwarded", 200),
        ("GET", "api.github.com", "/repos/octo/hello", "forwarded", 200),
        ("DELETE", "api.github.com", "/repos/octo/hello", "endpoint_denied", 403)]


async def test_an_upstream_base_path_bounds_what_the_tunnel_reaches(
        intercepting: Intercepting) -> None:
    proxy, ca, seen = await intercepting(github_route(upstream="https://api.github.com/v3"), REAL)
    _, client = await connect(proxy, ca, "api.github.com")
    inside = await client.request("GET", "/v3/user")
    assert inside.status == 200
    client.next_cycle()
    outside = await client.request("GET", "/admin")
    assert outside.status == 403 and b"outside_route" in outside.body
    await client.aclose()
    assert [r.target for r in seen.requests] == [b"/v3/user"]


async def test_interception_opens_nothing_else_and_asks_the_proxy_token_first(
        intercepting: Intercepting) -> None:
    proxy, ca, seen = await intercepting(github_route(), REAL)
    assert (await connect(proxy, ca, "api.github.com", auth=False))[0] == 407
    # Another port of the same host, and another host, are the policy's (which allows none).
    assert (await connect(proxy, None, "api.github.com", 8443))[0] == 403
    assert (await connect(proxy, None, "evil.example"))[0] == 403
    assert seen.requests == []


async def test_a_client_that_refuses_the_session_certificate_is_audited(
        intercepting: Intercepting) -> None:
    proxy, _, seen = await intercepting(github_route(), REAL)
    other = SessionCA(["api.github.com"])  # a client that trusts some other CA only
    try:
        await connect(proxy, other, "api.github.com")
        raise AssertionError("the handshake should have failed")
    except trio.BrokenResourceError:
        pass
    # Until the proxy has seen the end of the refused handshake (the client closed).
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    [event] = [e for e in proxy.events if isinstance(e, NetworkEvent)]
    assert (event.mode, event.decision, event.host, event.route) == (
        "connect", "deny", "api.github.com", "github")
    assert seen.requests == []


def domain_route() -> Route:
    return Route(name="allow_domain-0", upstream="https://api.github.com", credential_key="",
                 endpoint_rules=(("GET", "/ok/**"),), origin="domain")


async def test_a_filter_only_domain_forwards_the_programs_own_headers_and_only_when_intercepted(
        intercepting: Intercepting) -> None:
    proxy, ca, seen = await intercepting(domain_route(), None)
    # Not a credential route: its name is unknown in origin form.
    direct = await (await proxy.client()).request(
        "GET", "/allow_domain-0/ok/x", [("Authorization", f"Bearer {proxy.token.reveal()}")])
    assert direct.status == 404 and b'"routes": []' in direct.body
    _, client = await connect(proxy, ca, "api.github.com")
    allowed = await client.request("GET", "/ok/x", [("Authorization", "Bearer mine")])
    assert (allowed.status, allowed.body) == (200, b"saw Bearer mine for /ok/x")
    client.next_cycle()
    assert (await client.request("GET", "/other")).status == 403
    await client.aclose()
    assert [r.target for r in seen.requests] == [b"/ok/x"]
    assert not [e for e in proxy.events if isinstance(e, CredentialInjected)]


async def test_a_filter_only_domain_is_reached_through_its_rules_only(
        nursery: trio.Nursery, pki: Pki,
        start_route_proxy: Callable[..., Awaitable[RouteProxy]]) -> None:
    """The profile allows the host (its `allow_domain` entry) on 443 and 80. Before, a
    CONNECT to port 80 was a blind tunnel to the upstream (200: inside, the rules are not
    applied), and a plain-HTTP request went out unfiltered."""
    port, seen = await start_tls_upstream(nursery, pki.server, _echo)
    ca = SessionCA(["api.github.com"])
    proxy = await start_route_proxy(
        [(domain_route(), None)], pins={"api.github.com": f"127.0.0.1:{port}"},
        intercept=ca, policy=ProxyPolicy(hosts=frozenset({"api.github.com"})))
    status, _ = await connect(proxy, None, "api.github.com", 80)
    assert status == 403
    plain = await (await proxy.client()).request(
        "GET", "http://api.github.com/other",
        [("Proxy-Authorization", f"Bearer {proxy.token.reveal()}")])
    assert plain.status == 403 and b"endpoints_only" in plain.body
    # Through its interception, the rules still apply as before.
    _, client = await connect(proxy, ca, "api.github.com")
    assert (await client.request("GET", "/ok/x")).status == 200
    await client.aclose()
    assert [r.target for r in seen.requests] == [b"/ok/x"]
    refused = [(e.mode, e.port, e.reason) for e in proxy.events
               if isinstance(e, NetworkEvent) and e.decision == "deny"]
    assert refused == [("connect", 80, "endpoints_only"), ("http", 80, "endpoints_only")]


def test_a_domain_with_endpoints_that_is_also_a_routes_host_is_refused() -> None:
    network = NetworkPolicy(
        restricted=True, allow_domain=("api.github.com",), credentials=("github",),
        tls_intercept=TlsIntercept(),
        endpoint_domains=(("api.github.com", (("GET", "/user"),)),))
    with pytest.raises(CredentialError, match="upstream of route `github`") as info:
        session_routes(network)
    assert "endpoint_rules" in (info.value.hint or "")
    without = msgspec.structs.replace(network, tls_intercept=None)
    assert [r.name for r in session_routes(without)] == ["github"]
    other = msgspec.structs.replace(network, endpoint_domains=(
        ("raw.test", (("GET", "/a"),)), ("raw.test", (("POST", "/b"),))))
    [_, raw] = session_routes(other)
    assert (raw.name, raw.host, raw.endpoint_rules, raw.filter_only) == (
        "allow_domain-0", "raw.test", (("GET", "/a"), ("POST", "/b")), True)
    assert raw.base_url_variables() == raw.phantom_variables() == ()
