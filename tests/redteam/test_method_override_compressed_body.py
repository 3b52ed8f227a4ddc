"""A ``_method`` field inside a compressed request body.

On a route with endpoint rules the proxy watches a form or JSON request body for a
``_method`` field (``_bodyoverride.py``) and drops the upstream connection before the piece
that completes one. It watched the bytes as sent: a body with ``Content-Encoding: gzip`` was
watched compressed, and passed. An upstream that decompresses request bodies before its
framework reads them (ASP.NET Core's ``UseRequestDecompression`` beside its method-override
middleware, Apache's ``SetInputFilter DEFLATE`` in front of PHP) then ran the method the
field names, one no rule allows, with the real key.

Now such a body is watched decoded (gzip, deflate, every gzip member), in bounded steps and
at most ``max_body_bytes`` of it (a bomb is refused ``413`` past that); a body that does not
decode is ``400``, one in another coding ``415``; the body still goes upstream as sent. A real
proxy and a real TLS upstream that decodes, then takes ``_method``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Awaitable, Callable

import pytest
import trio

from nonod.proxy import ProxyLimits
from tests.credentials.conftest import (
    Pki,
    Responder,
    RouteProxy,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy

REAL = "ghp_RealGitHubSecret0123456789abcdefXYZ"
StartProxy = Callable[..., Awaitable[RouteProxy]]


async def decompresses_then_overrides(request: UpstreamRequest, respond: Responder) -> None:
    """Says the method it would run: the request body decompressed, then a form's
    ``_method`` taken, as a decompressing server in front of a method-override reads it."""
    body = request.body
    try:
        if request.header(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        elif request.header(b"content-encoding") == b"deflate":
            body = zlib.decompress(body)
    except (OSError, EOFError, zlib.error):
        await respond.whole(400, b"does not decode")
        return
    fields = dict(pair.partition(b"=")[::2] for pair in body.split(b"&"))
    await respond.whole(200, (fields.get(b"_method") or request.method).upper())


TARGET = "/github/repos/o/r/issues/1/comments"


async def post(proxy: RouteProxy, body: bytes, coding: str) -> tuple[int, str]:
    client = await proxy.client()
    response = await client.request(
        "POST", TARGET, [("Authorization", f"Bearer {proxy.token.reveal()}"),
                         ("Content-Type", "application/x-www-form-urlencoded"),
                         ("Content-Encoding", coding)], body=body)
    await client.aclose()
    reason = json.loads(response.body)["reason"] if response.status >= 400 else (
        response.body.decode())
    return response.status, reason


@pytest.mark.parametrize(("body", "coding"), [
    (gzip.compress(b"_method=DELETE", mtime=0), "gzip"),
    (gzip.compress(b"a=1&" + b"x" * 300_000 + b"&_method=DELETE", mtime=0), "gzip"),
    (zlib.compress(b"a=1&_method=DELETE"), "deflate"),
    (gzip.compress(b"a=1", mtime=0) + gzip.compress(b"&_method=DELETE", mtime=0), "gzip"),
], ids=["gzip", "gzip-far-in", "deflate", "second-member"])
async def test_an_override_in_a_compressed_body_is_refused(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, body: bytes,
        coding: str) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, decompresses_then_overrides)
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy = await start_route_proxy([(route, REAL)], pins={"api.github.com": f"127.0.0.1:{port}"})
    # Before: (200, "DELETE"), the upstream running a method no rule allows.
    assert await post(proxy, body, coding) == (403, "method_override")
    assert seen.requests == []
    plain = gzip.compress(b"a=1&b=2", mtime=0)
    assert await post(proxy, plain, "gzip") == (200, "POST")
    assert seen.requests[-1].body == plain  # forwarded as sent


async def test_a_compressed_body_the_proxy_cannot_read_is_refused(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, decompresses_then_overrides)
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy = await start_route_proxy([(route, REAL)], pins={"api.github.com": f"127.0.0.1:{port}"},
                                    limits=ProxyLimits(max_body_bytes=1 << 20))
    bomb = gzip.compress(b"\0" * (8 << 20), mtime=0)  # 8 KiB that expand to 8 MiB
    assert len(bomb) < 1 << 20
    assert await post(proxy, bomb, "gzip") == (413, "body_too_large")
    assert await post(proxy, b"not gzip at all", "gzip") == (400, "bad_request")
    cut = gzip.compress(b"a=1", mtime=0)[:-6]
    assert await post(proxy, cut, "gzip") == (400, "bad_request")  # cut short
    assert await post(proxy, b"x", "br") == (415, "body_encoding")
    # Only the cut-short body reached the upstream whole (its Content-Length said so before
    # its end was found short): a POST the rule allows, which the upstream cannot decode
    # either. The bomb and the garbage were stopped before their first piece went.
    assert [r.body for r in seen.requests] == [cut]
