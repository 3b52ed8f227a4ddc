"""The reverse proxy end to end: a real proxy listener, real TLS fake upstreams (a private CA
made with trustme, reached through operator pins), real clients. The upstreams prove they
got the real secret; the program never sees it."""

from __future__ import annotations

import base64
import gzip
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import msgspec
import trio
import trio.testing
import trustme
from structlog.testing import capture_logs

from nonod.credentials import PhantomToken, Route
from nonod.proxy import CredentialInjected, NetworkEvent, ProxyLimits
from tests.credentials.conftest import (
    Pki,
    Responder,
    RouteProxy,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)

REAL = "ghp_RealGitHubSecret0123456789abcdefXYZ"
StartProxy = Callable[..., Awaitable[RouteProxy]]


async def echo(request: UpstreamRequest, respond: Responder) -> None:
    """Reflects everything it got: headers in a response header and in the body."""
    body = json.dumps({
        "method": request.method.decode(), "target": request.target.decode(),
        "headers": {n.decode(): v.decode() for n, v in request.headers},
        "body": request.body.decode("latin-1"),
    }).encode()
    auth = request.header(b"authorization") or b""
    await respond.whole(200, body, [(b"Content-Type", b"application/json"),
                                    (b"X-Echo-Authorization", auth)])


async def github(nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy,
                 app: Callable[[UpstreamRequest, Responder], Awaitable[None]] = echo,
                 route: Route | None = None, value: str | None = REAL, **kw: Any
                 ) -> tuple[RouteProxy, Any]:
    port, seen = await start_tls_upstream(nursery, pki.server, app)
    proxy = await start_route_proxy([(route or github_route(), value)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"}, **kw)
    return proxy, seen


def bearer(proxy: RouteProxy) -> tuple[str, str]:
    return ("Authorization", f"Bearer {proxy.token.reveal()}")


def network_events(proxy: RouteProxy) -> list[NetworkEvent]:
    return [e for e in proxy.events if isinstance(e, NetworkEvent)]


async def wait_for_events(proxy: RouteProxy, n: int) -> None:
    with trio.fail_after(10):
        while len(network_events(proxy)) < n:
            await trio.testing.wait_all_tasks_blocked()


# ----------------------------------------------------------------------------- forwarding


async def test_upstream_gets_the_real_secret_program_sees_only_the_phantom(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    phantom = proxy.token.reveal()
    client = await proxy.client()
    response = await client.request("POST", "/github/repos/o/r/issues?per_page=5", [
        bearer(proxy), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-Proto", "http"), ("Via", "1.1 sandbox"),
        ("Accept-Encoding", "gzip"), ("X-Carry", f"also {phantom}"), ("Accept", "*/*"),
    ], body=b'{"title": "hello"}')
    (got,) = seen.requests
    assert got.header(b"authorization") == f"Bearer {REAL}".encode()
    assert got.header(b"host") == b"api.github.com"
    assert got.target == b"/repos/o/r/issues?per_page=5"
    assert got.body == b'{"title": "hello"}'
    assert got.header(b"accept-encoding") == b"identity"
    for name in (b"proxy-authorization", b"x-forwarded-for", b"x-forwarded-proto", b"via",
                 b"x-carry"):
        assert got.header(name) is None, name
    assert all(phantom.encode() not in v for _, v in got.headers)
    # The reflection comes back with the phantom token in place of the real secret.
    assert response.status == 200
    raw = response.body + b"".join(v for _, v in response.headers)
    assert REAL.encode() not in raw
    assert response.header(b"X-Echo-Authorization") == f"Bearer {phantom}".encode()
    assert json.loads(response.body)["headers"]["authorization"] == f"Bearer {phantom}"
    await wait_for_events(proxy, 1)
    injected = [e for e in proxy.events if isinstance(e, CredentialInjected)]
    assert injected == [CredentialInjected(route="github", credential="github_token",
                                           source="keychain", into="Authorization")]
    (event,) = network_events(proxy)
    assert (event.mode, event.decision, event.route, event.auth, event.status) == (
        "reverse", "allow", "github", "ok", 200)
    assert (event.method, event.path, event.host, event.port) == (
        "POST", "/repos/o/r/issues", "api.github.com", 443)
    assert event.bytes_out == len(b'{"title": "hello"}') and event.bytes_in > 0


async def test_a_secret_straddling_two_chunks_is_still_replaced(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    async def split(request: UpstreamRequest, respond: Responder) -> None:
        body = b"before " + REAL.encode() + b" after"
        cut = len(b"before ") + len(REAL) // 2
        await respond.start(200, [(b"Content-Type", b"text/plain")])  # chunked
        await respond.data(body[:cut])
        # The proxy has read, scrubbed and passed on all it could of the first half.
        await trio.testing.wait_all_tasks_blocked()
        await respond.data(body[cut:])
        await respond.end()

    proxy, _ = await github(nursery, pki, start_route_proxy, split)
    client = await proxy.client()
    await client.send("GET", "/github/echo", [bearer(proxy)])
    head = await client.head()
    assert head.status_code == 200
    pieces = []
    while True:
        event = await client.event()
        if isinstance(event, h11.EndOfMessage):
            break
        assert isinstance(event, h11.Data)
        pieces.append(event.data)
    assert len(pieces) >= 2  # it did arrive in more than one piece
    body = b"".join(pieces)
    assert body == b"before " + proxy.token.reveal().encode() + b" after"


async def test_keep_alive_on_both_sides(nursery: trio.Nursery, pki: Pki,
                                        start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    client = await proxy.client()
    for n in range(3):
        response = await client.request("GET", f"/github/n/{n}", [bearer(proxy)])
        assert response.status == 200
        client.next_cycle()
    assert [r.target for r in seen.requests] == [b"/n/0", b"/n/1", b"/n/2"]
    assert seen.connections == 1  # one upstream connection carried all three


def _connections_to(port: int) -> int:
    """Established TCP connections of this network namespace whose far end is ``port``, as
    the kernel lists them (the proxy's side of its upstream connections)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


async def test_kept_upstream_connections_do_not_multiply_with_the_routes(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """Each client connection keeps one upstream connection per route it used: with many
    routes, a session's few allowed connections held many times as many upstream ones (and
    their TLS state) in the daemon. The kept ones are at most ``max_connections`` in all;
    a client connection whose kept one was closed connects again."""
    port, seen = await start_tls_upstream(nursery, pki.server, echo)
    names = [f"r{i}" for i in range(8)]
    proxy = await start_route_proxy([(github_route(name=name), REAL) for name in names],
                                    pins={"api.github.com": f"127.0.0.1:{port}"},
                                    limits=ProxyLimits(max_connections=4))
    clients = [await proxy.client() for _ in range(4)]
    for client in clients:
        for name in names:
            response = await client.request("GET", f"/{name}/x", [bearer(proxy)])
            assert response.status == 200
            client.next_cycle()
    assert seen.connections == 32
    await trio.testing.wait_all_tasks_blocked()  # the proxy is done with the last request
    assert _connections_to(port) <= 4  # before: 32, eight per client connection
    # The first client's kept connections were closed; its next request connects again.
    response = await clients[0].request("GET", "/r0/again", [bearer(proxy)])
    assert response.status == 200
    assert seen.connections == 33
    await trio.testing.wait_all_tasks_blocked()
    assert _connections_to(port) <= 4


async def test_chunked_request_bodies_stream_through(nursery: trio.Nursery, pki: Pki,
                                                     start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    client = await proxy.client()
    await client.send("PUT", "/github/upload", [bearer(proxy)],
                      chunks=[b"part one, ", b"part two, ", b"end"])
    response = await client.response()
    assert response.status == 200
    (got,) = seen.requests
    assert got.body == b"part one, part two, end"
    assert got.header(b"transfer-encoding") == b"chunked"


async def test_request_bodies_over_the_limit_get_413(nursery: trio.Nursery, pki: Pki,
                                                     start_route_proxy: StartProxy) -> None:
    limits = ProxyLimits(max_body_bytes=1000)
    proxy, seen = await github(nursery, pki, start_route_proxy, limits=limits)
    client = await proxy.client()
    declared = await client.request("POST", "/github/x", [bearer(proxy)], body=b"x" * 1001)
    assert declared.status == 413
    assert json.loads(declared.body)["reason"] == "body_too_large"
    assert seen.requests == []
    client = await proxy.client()
    await client.send("POST", "/github/x", [bearer(proxy)], chunks=[b"y" * 600, b"y" * 600])
    streamed = await client.response()
    assert streamed.status == 413
    await wait_for_events(proxy, 2)
    assert [e.status for e in network_events(proxy)] == [413, 413]
    assert seen.requests == []  # the upstream never got a complete request


# ---------------------------------------------------------------------------- refusals


async def test_missing_wrong_and_foreign_tokens_get_401(nursery: trio.Nursery, pki: Pki,
                                                        start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    other_session = PhantomToken.new()
    cases = [([], "missing"), ([("Authorization", "Bearer wrong")], "invalid"),
             ([("Authorization", f"Bearer {other_session.reveal()}")], "invalid"),
             ([("Authorization", REAL)], "invalid")]
    for headers, auth in cases:
        client = await proxy.client()
        response = await client.request("GET", "/github/user", headers)
        assert response.status == 401
        assert json.loads(response.body)["reason"] == f"token_{auth}"
    assert seen.requests == [] and seen.connections == 0
    await wait_for_events(proxy, 4)
    events = network_events(proxy)
    assert [(e.decision, e.auth, e.status, e.route) for e in events] == [
        ("deny", "missing", 401, "github"), ("deny", "invalid", 401, "github"),
        ("deny", "invalid", 401, "github"), ("deny", "invalid", 401, "github")]


async def test_a_token_from_another_sessions_listener_gets_401(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, echo)
    pins = {"api.github.com": f"127.0.0.1:{port}"}
    session_a = await start_route_proxy([(github_route(), REAL)], pins=pins)
    session_b = await start_route_proxy([(github_route(), REAL)], pins=pins)
    client = await session_b.client()
    replayed = await client.request("GET", "/github/user", [bearer(session_a)])
    assert replayed.status == 401
    assert seen.requests == []
    client = await session_a.client()
    assert (await client.request("GET", "/github/user", [bearer(session_a)])).status == 200
    await wait_for_events(session_b, 1)
    (event,) = network_events(session_b)
    assert (event.auth, event.status) == ("invalid", 401)


async def test_unknown_routes_get_404_on_segment_boundaries(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    for target in ("/gitlab/x", "/github.evil/x", "/githubx/x", "/Github/x", "/%67ithub/x",
                   "/", f"/{proxy.token.reveal()}/x"):
        client = await proxy.client()
        response = await client.request("GET", target, [bearer(proxy)])
        assert response.status == 404, target
        assert json.loads(response.body)["routes"] == ["github"]
    assert seen.requests == []
    await wait_for_events(proxy, 7)
    assert all(e.reason == "unknown_route" for e in network_events(proxy))
    assert network_events(proxy)[2].route == "githubx"
    assert network_events(proxy)[1].route == ""  # not a route name at all
    assert network_events(proxy)[-1].route == ""  # the phantom token is never an event field


async def test_endpoint_rule_miss_gets_403_naming_the_rule_set(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    route = github_route(endpoint_rules=(("GET", "/repos/*/issues"),))
    proxy, seen = await github(nursery, pki, start_route_proxy, route=route)
    client = await proxy.client()
    allowed = await client.request("GET", "/github/repos/octo/issues", [bearer(proxy)])
    assert allowed.status == 200
    client.next_cycle()
    for target, status in [("/github/repos/octo/hello/issues", 403), ("/github/user", 403),
                           ("/github/repos/a%2fb/issues", 400),
                           ("/github/repos/%2e%2e/issues", 400)]:
        client = await proxy.client()
        response = await client.request("GET", target, [bearer(proxy)])
        assert response.status == status, target
        if status == 403:
            body = json.loads(response.body)
            assert body["rule_set"] == "network.custom_credentials.github.endpoint_rules"
            assert body["rules"] == ["GET /repos/*/issues"]
    assert [r.target for r in seen.requests] == [b"/repos/octo/issues"]
    await wait_for_events(proxy, 5)
    assert [e.reason for e in network_events(proxy)] == [
        "forwarded", "endpoint_denied", "endpoint_denied", "bad_path", "bad_path"]


async def test_a_method_override_cannot_pass_the_endpoint_rules(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """The rules match the method and path as sent; an upstream that honours
    X-HTTP-Method-Override (Google APIs), ``_method`` (Rack, Express) or X-Original-URL
    (IIS, Symfony) would run another one with the real key. On
    a route with rules such a request is refused; on a route without rules (every method
    allowed) it goes through as before."""
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy, seen = await github(nursery, pki, start_route_proxy, route=route)
    target = "/github/repos/o/r/issues/1/comments"
    for headers, query in [([("X-HTTP-Method-Override", "DELETE")], ""),
                           ([("x-http-method", "DELETE")], ""),
                           ([("X-Method-Override", "PATCH")], ""),
                           ([("X-Original-URL", "/admin")], ""),
                           ([("X-Rewrite-URL", "/admin")], ""),
                           ([("X_HTTP_Method_Override", "DELETE")], ""),
                           ([("x_original_url", "/admin")], ""),
                           ([], "?_method=DELETE"), ([], "?a=1&%5FMETHOD=DELETE"),
                           ([], "?a=1;_method=DELETE"), ([], "?_method[]=DELETE"),
                           ([], "?_method%5B0%5D=DELETE")]:
        client = await proxy.client()
        response = await client.request("POST", target + query, [bearer(proxy), *headers],
                                        body=b"{}")
        assert response.status == 403, (headers, query)
        assert json.loads(response.body)["reason"] == "method_override"
    assert seen.requests == []
    client = await proxy.client()
    assert (await client.request("POST", target, [bearer(proxy)], body=b"{}")).status == 200
    open_proxy, open_seen = await github(nursery, pki, start_route_proxy)
    client = await open_proxy.client()
    response = await client.request("POST", target, [bearer(open_proxy),
                                                     ("X-HTTP-Method-Override", "DELETE")])
    assert response.status == 200
    assert open_seen.requests[0].header(b"x-http-method-override") == b"DELETE"


async def test_a_method_override_in_the_body_cannot_pass_the_endpoint_rules(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """Rails' Rack::MethodOverride runs the method a POST form body's ``_method`` names
    (Laravel's from a JSON body's too). On a route with rules the piece of the body that
    completes such a field is not sent: the upstream never gets a whole request. Other bodies,
    and a route without rules, go through."""
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy, seen = await github(nursery, pki, start_route_proxy, route=route)
    target = "/github/repos/o/r/issues/1/comments"
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    for body, headers in [(b"_method=DELETE", form), (b"a=1&%5fMETHOD=delete", form),
                          (b'{"body": "x", "_method": "DELETE"}', []),
                          (b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'
                           b"DELETE\r\n--b--\r\n",
                           [("Content-Type", "multipart/form-data; boundary=b")])]:
        client = await proxy.client()
        response = await client.request("POST", target, [bearer(proxy), *headers], body=body)
        assert response.status == 403, body
        assert json.loads(response.body)["reason"] == "method_override"
    client = await proxy.client()  # split across pieces: refused at the piece that ends it
    await client.send("POST", target, [bearer(proxy), *form], chunks=[b"a=1&_met", b"hod="])
    assert (await client.response()).status == 403
    assert seen.requests == []
    for body in (b'{"body": "call self.get_method() or my_method"}', b"a=1&x_method=2"):
        client = await proxy.client()
        assert (await client.request("POST", target, [bearer(proxy)], body=body)).status == 200
    open_proxy, open_seen = await github(nursery, pki, start_route_proxy)
    client = await open_proxy.client()
    response = await client.request("POST", target, [bearer(open_proxy), *form],
                                    body=b"_method=DELETE")
    assert response.status == 200 and open_seen.requests[0].body == b"_method=DELETE"


async def test_trace_is_not_forwarded(nursery: trio.Nursery, pki: Pki,
                                      start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy)
    client = await proxy.client()
    response = await client.request("TRACE", "/github/x", [bearer(proxy)])
    assert response.status == 405 and seen.requests == []


async def test_a_missing_secret_answers_503_and_forwards_nothing(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    proxy, seen = await github(nursery, pki, start_route_proxy, value=None)
    client = await proxy.client()
    response = await client.request("POST", "/github/x", [bearer(proxy), ("X-Private", "p")],
                                    body=b"program data")
    assert response.status == 503
    assert json.loads(response.body) == {
        "error": "the credential of this route is not available to the daemon",
        "reason": "secret_missing", "route": "github", "problem": "credential.not_found"}
    assert seen.connections == 0 and seen.requests == []
    assert not [e for e in proxy.events if isinstance(e, CredentialInjected)]


# ------------------------------------------------------------------------ what comes back


async def test_sse_first_event_arrives_before_the_upstream_finishes(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    second_may_go = trio.Event()
    finished = trio.Event()

    async def sse(request: UpstreamRequest, respond: Responder) -> None:
        await respond.start(200, [(b"Content-Type", b"text/event-stream")])
        await respond.data(b"data: first\n\n")
        await second_may_go.wait()
        await respond.data(b"data: second\n\n")
        await respond.end()
        finished.set()

    proxy, _ = await github(nursery, pki, start_route_proxy, sse)
    client = await proxy.client()
    await client.send("GET", "/github/stream", [bearer(proxy)])
    head = await client.head()
    assert head.status_code == 200
    with trio.fail_after(10):
        first = await client.event()
    assert isinstance(first, h11.Data) and first.data == b"data: first\n\n"
    assert not finished.is_set()
    second_may_go.set()
    assert await client.rest() == b"data: second\n\n"


async def test_redirects_are_returned_not_followed(nursery: trio.Nursery, pki: Pki,
                                                   start_route_proxy: StartProxy) -> None:
    async def redirect(request: UpstreamRequest, respond: Responder) -> None:
        location = f"https://evil.example/collect?key={REAL}".encode()
        await respond.whole(302, b"moved", [(b"Location", location)])

    proxy, seen = await github(nursery, pki, start_route_proxy, redirect)
    client = await proxy.client()
    response = await client.request("GET", "/github/login", [bearer(proxy)])
    assert response.status == 302
    assert response.header(b"Location") == (
        f"https://evil.example/collect?key={proxy.token.reveal()}".encode())
    assert len(seen.requests) == 1


#: A key with the characters URL encoders and HTML escapers disagree about.
ODD_REAL = "wJalr/XUtn+FEMI='K7\"MD<ENG>&b~P*x!(0123)"


def _encoded_as(value: str, kept: str, *, plus: bool = False, lower: bool = False) -> str:
    """``value`` percent-encoded by an encoder that keeps letters, digits and ``kept``."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in kept):
            out.append(char)
        elif char == " " and plus:
            out.append("+")
        else:
            out.append(("%%%02x" if lower else "%%%02X") % byte)
    return "".join(out)


def _html_escaped(value: str, quote: str, apostrophe: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', quote).replace("'", apostrophe))


async def test_a_reflection_in_an_encoders_own_spelling_is_scrubbed(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """Upstreams re-encode what they reflect with their framework's encoder: a redirect built
    with Python's ``quote`` keeps ``/``, .NET writes lower-case hex, JavaScript keeps
    ``!*'()``, Java encodes ``~``; an error page HTML-escapes the header it quotes, each
    escaper its own way. None of those spellings reaches the program."""
    spellings = [
        _encoded_as(ODD_REAL, "-_.~/"),  # Python quote()
        _encoded_as(ODD_REAL, "-_.!*()", plus=True, lower=True),  # .NET HttpUtility.UrlEncode
        _encoded_as(ODD_REAL, "-_.!~*'()"),  # JavaScript encodeURIComponent
        _encoded_as(ODD_REAL, "-_.*", plus=True),  # Java URLEncoder, Ruby www_form
        _encoded_as(ODD_REAL, "-_.", plus=True),  # PHP urlencode
        _html_escaped(ODD_REAL, "&quot;", "&#x27;"),  # Python html.escape
        _html_escaped(ODD_REAL, "&#34;", "&#39;"),  # Go html/template, markupsafe
        _html_escaped(ODD_REAL, "&quot;", "&#039;"),  # PHP htmlspecialchars
    ]

    async def reflect(request: UpstreamRequest, respond: Responder) -> None:
        key = (request.header(b"authorization") or b"").decode().removeprefix("Bearer ")
        assert key == ODD_REAL
        forms = [
            _encoded_as(key, "-_.~/"), _encoded_as(key, "-_.!*()", plus=True, lower=True),
            _encoded_as(key, "-_.!~*'()"), _encoded_as(key, "-_.*", plus=True),
            _encoded_as(key, "-_.", plus=True), _html_escaped(key, "&quot;", "&#x27;"),
            _html_escaped(key, "&#34;", "&#39;"), _html_escaped(key, "&quot;", "&#039;"),
        ]
        body = "\n".join(f"<p>{form}</p>" for form in forms).encode()
        await respond.whole(302, body, [(b"Location", f"https://x.example/cb?k={forms[0]}"),
                                        (b"Link", f"<https://x.example/?k={forms[1]}>")])

    proxy, _ = await github(nursery, pki, start_route_proxy, reflect, value=ODD_REAL)
    client = await proxy.client()
    response = await client.request("GET", "/github/login", [bearer(proxy)])
    assert response.status == 302
    raw = response.body + b"".join(v for _, v in response.headers)
    for spelling in spellings:
        assert spelling.encode() not in raw, spelling
    phantom = proxy.token.reveal()
    assert response.header(b"Location") == f"https://x.example/cb?k={phantom}".encode()
    assert response.body.count(phantom.encode()) == len(spellings)


async def test_a_reflection_inside_a_base64_blob_is_scrubbed_at_every_alignment(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """An upstream that answers with a base64 dump of the request (a debug echo, a token
    that embeds what it was given) puts the key at a byte offset the program picks with the
    headers it sends before it: each of the three alignments comes back scrubbed."""
    from tests.credentials.test_scrub import b64_decodings

    async def dump(request: UpstreamRequest, respond: Responder) -> None:
        raw = b"\r\n".join(name + b": " + value for name, value in request.headers)
        await respond.whole(200, b'{"dump": "' + base64.b64encode(raw) + b'"}',
                            [(b"Content-Type", b"application/json")])

    proxy, seen = await github(nursery, pki, start_route_proxy, dump)
    client = await proxy.client()
    for pad in range(3):
        response = await client.request("GET", "/github/debug",
                                        [("X-Pad", "p" * (pad + 1)), bearer(proxy)])
        client.next_cycle()
        blob = json.loads(response.body)["dump"].encode()
        assert not any(REAL[1:-1].encode() in d for d in b64_decodings(blob)), pad
    assert [r.header(b"x-pad") for r in seen.requests] == [b"p", b"pp", b"ppp"]


async def test_gzip_bodies_are_decoded_and_scrubbed(nursery: trio.Nursery, pki: Pki,
                                                    start_route_proxy: StartProxy) -> None:
    async def zipped(request: UpstreamRequest, respond: Responder) -> None:
        await respond.whole(200, gzip.compress(b"key=" + REAL.encode()),
                            [(b"Content-Encoding", b"gzip")])

    proxy, _ = await github(nursery, pki, start_route_proxy, zipped)
    client = await proxy.client()
    response = await client.request("GET", "/github/x", [bearer(proxy)])
    assert response.body == b"key=" + proxy.token.reveal().encode()
    assert response.header(b"Content-Encoding") is None


async def test_upstream_certificates_are_verified(nursery: trio.Nursery, pki: Pki,
                                                  start_route_proxy: StartProxy,
                                                  tmp_path: Any) -> None:
    stranger = trustme.CA()
    port = await _refused_upstream(nursery, start_route_proxy, stranger, "api.github.com")
    # The route's own tls_ca makes the same upstream trusted, for that route only.
    ca_file = tmp_path / "stranger.pem"
    stranger.cert_pem.write_to_path(str(ca_file))
    trusted = await start_route_proxy([(github_route(tls_ca=str(ca_file)), REAL)],
                                      pins={"api.github.com": f"127.0.0.1:{port}"}, ca_file="")
    client = await trusted.client()
    assert (await client.request("GET", "/github/x", [bearer(trusted)])).status == 200


async def test_a_trusted_certificate_for_another_name_is_refused(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """The CA is trusted, but the certificate names another host: the handshake fails on the
    name check, nothing is sent (the credential never leaves)."""
    await _refused_upstream(nursery, start_route_proxy, pki.ca, "evil.example")


async def _refused_upstream(nursery: trio.Nursery, start_route_proxy: StartProxy,
                            ca: trustme.CA, name: str) -> int:
    """An upstream for api.github.com whose certificate (``name``, from ``ca``) the route
    must refuse: 502 upstream_tls, and nothing reached it. Returns its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    port, seen = await start_tls_upstream(nursery, context, echo)
    proxy = await start_route_proxy([(github_route(), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    client = await proxy.client()
    response = await client.request("GET", "/github/x", [bearer(proxy)])
    assert response.status == 502
    assert json.loads(response.body)["reason"] == "upstream_tls"
    assert seen.requests == []
    return port


async def test_url_path_and_query_param_modes(nursery: trio.Nursery, pki: Pki,
                                              start_route_proxy: StartProxy) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, echo)
    telegram = Route(name="telegram", upstream="https://upstream.test",
                     credential_key="tg", inject_mode="url_path", path_pattern="/bot{}/")
    maps = Route(name="maps", upstream="https://upstream.test/maps", credential_key="mp",
                 inject_mode="query_param", query_param_name="key")
    proxy = await start_route_proxy([(telegram, "123456:ABCdefGHI"), (maps, "AIzaMapsKey")],
                                    pins={"upstream.test": f"127.0.0.1:{port}"})
    phantom = proxy.token.reveal()
    client = await proxy.client()
    sent = await client.request("GET", f"/telegram/bot{phantom}/getMe?x=1")
    assert sent.status == 200 and b"ABCdefGHI" not in sent.body
    client.next_cycle()
    found = await client.request("GET", f"/maps/api/geocode?address=here&key={phantom}")
    assert found.status == 200
    assert [r.target for r in seen.requests] == [b"/bot123456%3AABCdefGHI/getMe?x=1",
                                                 b"/maps/api/geocode?address=here&key=AIzaMapsKey"]
    await wait_for_events(proxy, 2)
    events = network_events(proxy)
    assert [e.path for e in events] == ["/bot[phantom]/getMe", "/api/geocode"]


# ---------------------------------------------------------------- nothing leaks anywhere


async def test_no_secret_or_phantom_in_any_event_or_log(nursery: trio.Nursery, pki: Pki,
                                                        start_route_proxy: StartProxy) -> None:
    async def chatty(request: UpstreamRequest, respond: Responder) -> None:
        if request.target.startswith(b"/fail"):
            await respond.stream.aclose()  # the upstream breaks mid-request
            return
        await echo(request, respond)

    with capture_logs() as logs:
        route = github_route(endpoint_rules=(("*", "/ok/**"), ("*", "/fail")))
        proxy, _ = await github(nursery, pki, start_route_proxy, chatty, route=route)
        phantom = proxy.token.reveal()
        attempts: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("GET", f"/github/ok/{phantom}?key={REAL}", [bearer(proxy)]),
            ("GET", f"/github/ok/x?token={phantom}", [bearer(proxy)]),
            ("GET", "/github/nope", [bearer(proxy)]),
            ("GET", f"/github/ok/{REAL}", [("Authorization", f"Bearer {REAL}")]),
            ("GET", f"/{phantom}/x", []),
            ("GET", "/github/fail", [bearer(proxy)]),
            ("GET", "/github/ok/%2e%2e", [bearer(proxy)]),
        ]
        for method, target, headers in attempts:
            client = await proxy.client()
            response = await client.request(method, target, headers)
            assert REAL.encode() not in response.body
            await client.aclose()
        await wait_for_events(proxy, len(attempts))
    written = msgspec.json.encode(proxy.events) + repr(logs).encode()
    assert REAL.encode() not in written
    assert phantom.encode() not in written
    assert [e.status for e in network_events(proxy)] == [200, 200, 403, 401, 404, 502, 400]


async def test_a_kept_alive_upstream_that_went_away_is_replaced(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    async def once(request: UpstreamRequest, respond: Responder) -> None:
        await echo(request, respond)
        await respond.stream.aclose()  # closes the idle connection without saying so

    proxy, seen = await github(nursery, pki, start_route_proxy, once)
    client = await proxy.client()
    for n in range(2):
        assert (await client.request("GET", f"/github/{n}", [bearer(proxy)])).status == 200
        client.next_cycle()
        await trio.testing.wait_all_tasks_blocked()
    assert seen.connections == 2 and [r.target for r in seen.requests] == [b"/0", b"/1"]


async def test_head_and_not_modified_keep_their_length(nursery: trio.Nursery, pki: Pki,
                                                       start_route_proxy: StartProxy) -> None:
    async def sized(request: UpstreamRequest, respond: Responder) -> None:
        status = 304 if request.target == b"/cached" else 200
        await respond.start(status, [(b"Content-Length", b"1234"), (b"ETag", b'"v1"')])
        await respond.end()

    proxy, _ = await github(nursery, pki, start_route_proxy, sized)
    client = await proxy.client()
    head = await client.request("HEAD", "/github/file", [bearer(proxy)])
    assert (head.status, head.header(b"Content-Length"), head.body) == (200, b"1234", b"")
    client.next_cycle()
    cached = await client.request("GET", "/github/cached", [bearer(proxy)])
    assert (cached.status, cached.header(b"Content-Length")) == (304, b"1234")


async def test_a_request_in_flight_when_the_session_ends_is_recorded(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """The session's services are cancelled when its program ends; a request that reached
    the upstream (with the real secret) by then still gets its record, before the audit
    file is sealed. Before: cancelled with its handler, it left no record at all (seen as a
    lost ``GET`` record in a loaded whole-suite run of tests/toolsandbox/test_real_gh.py)."""
    reached = trio.Event()

    async def hangs(request: UpstreamRequest, respond: Responder) -> None:
        reached.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as session:
        proxy, seen = await github(nursery, pki, start_route_proxy, app=hangs, within=session)
        client = await proxy.client()
        await client.send("GET", "/github/repos/o/r/issues", [bearer(proxy)])
        with trio.fail_after(10):
            await reached.wait()
        session.cancel_scope.cancel()  # the program exited: its session's services end
    assert [r.header(b"authorization") for r in seen.requests] == [f"Bearer {REAL}".encode()]
    (event,) = network_events(proxy)
    assert (event.decision, event.reason, event.route, event.auth, event.method) == (
        "allow", "session_ended", "github", "ok", "GET")
