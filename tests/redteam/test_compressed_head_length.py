"""The length of a compressed body that reflects the credential, told by a HEAD answer.

A route's responses are scrubbed of the real secret, and a body is decoded (gzip, deflate)
before it is scrubbed: the program never sees the compressed bytes, nor their length (a body
is re-framed, chunked, without ``Content-Length``). But a ``HEAD`` answer and a ``304``
carry no body, and kept the upstream's ``Content-Length`` and ``Content-Encoding``: for an
upstream that compresses anyway (the proxy asks for ``identity``) a body that reflects both
the request's credential and something the program chose (an echo, an error page quoting
the request), that length is the compressed length, which is shorter when what the program
chose repeats more of the key: BREACH, a guess at a time, through the HEAD answers.

Now a bodiless answer in a content coding says what a ``GET`` through the proxy would: no
coding (the proxy decodes it) and no length (it re-frames the body). A real proxy and a real
TLS upstream that gzips what it reflects.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable

import trio

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


async def compresses_what_it_reflects(request: UpstreamRequest, respond: Responder) -> None:
    """Echoes the request (its credential and its query) in a gzip body, whatever the
    request's Accept-Encoding; a HEAD gets the GET's headers, length included."""
    body = gzip.compress(json.dumps({
        "authorization": (request.header(b"authorization") or b"").decode(),
        "target": request.target.decode()}).encode(), mtime=0)
    headers = [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip"),
               (b"Content-Length", str(len(body)).encode())]
    await respond.start(200, headers)
    if request.method != b"HEAD":
        await respond.data(body)
    await respond.end()


async def test_a_head_answer_does_not_tell_the_compressed_length(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, _ = await start_tls_upstream(nursery, pki.server, compresses_what_it_reflects)
    proxy = await start_route_proxy([(github_route(), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    auth = [("Authorization", f"Bearer {proxy.token.reveal()}")]
    right, wrong = "Bearer%20" + REAL[:20], "Bearer%20ghp_QzkxwvMpnbTyLcdjoG"
    lengths = {}
    client = await proxy.client()
    for guess in (right, wrong):
        head = await client.request("HEAD", f"/github/echo?q={guess}", auth)
        assert head.status == 200 and head.body == b""
        lengths[guess] = head.header(b"Content-Length")
        assert head.header(b"Content-Encoding") is None  # a GET through the proxy has none
        client.next_cycle()
    # Before: 114 and 132 bytes, gzip: the right guess compressed with the reflected key.
    assert lengths == {right: None, wrong: None}
    got = await client.request("GET", f"/github/echo?q={right}", auth)
    assert got.header(b"Content-Length") is None and got.header(b"Content-Encoding") is None
    assert REAL not in got.body.decode()  # decoded, then scrubbed
