"""The compressed length of a reflecting body, told by where the proxy's pieces end (review26).

The thirtieth pass took a ``HEAD`` answer's ``Content-Length`` away from a compressed body
that reflects the credential and the program's guess (BREACH). A ``GET``'s body is decoded
and re-framed, but piece by piece as the compressed bytes arrive: the decoded bytes of the
first so many compressed bytes go to the program before the next arrive. The more of the key
the guess repeats, the better the body compresses, the more of it those bytes decode to. For
an upstream that compresses although the proxy asks for ``identity``, and sends its body in
parts (a TLS record, a flush), what the program has before the next part is the same oracle.
Found and not closed: closing it means holding a decoded body whole (or to fixed points that
do not depend on where the compressed parts end) before any of it goes on.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Awaitable, Callable

import h11
import pytest
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
PAUSE = 1.0
FIRST = 1500  # compressed bytes sent before the pause
_WORDS = random.Random(1)
FILLER = " ".join("".join(_WORDS.choice("abcdefghijklmnopqrstuvwxyz")
                          for _ in range(_WORDS.randint(2, 9))) for _ in range(3000))


async def compresses_in_two_parts(request: UpstreamRequest, respond: Responder) -> None:
    """Echoes the credential and the target in a gzip body (whatever Accept-Encoding said),
    sends its first FIRST compressed bytes, pauses, then the rest."""
    body = gzip.compress(json.dumps({
        "authorization": (request.header(b"authorization") or b"").decode(),
        "target": request.target.decode(), "more": FILLER}).encode(), mtime=0)
    await respond.start(200, [(b"Content-Type", b"application/json"),
                              (b"Content-Encoding", b"gzip")])
    await respond.data(body[:FIRST])
    await trio.sleep(PAUSE)
    await respond.data(body[FIRST:])
    await respond.end()


async def before_the_pause(proxy: RouteProxy, guess: str) -> int:
    client = await proxy.client()
    await client.send("GET", f"/github/echo?q={guess}",
                      [("Authorization", f"Bearer {proxy.token.reveal()}")], b"")
    await client.head()
    got = 0
    with trio.move_on_after(PAUSE / 2):
        while True:
            event = await client.event()
            if not isinstance(event, h11.Data):
                break
            got += len(event.data)
    await client.aclose()
    return got


@pytest.mark.xfail(strict=True, reason="found and not closed (review26): a decoded body goes "
                   "on as its compressed parts arrive")
async def test_what_comes_before_the_next_part_does_not_tell_the_compressed_length(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, _ = await start_tls_upstream(nursery, pki.server, compresses_in_two_parts)
    proxy = await start_route_proxy([(github_route(), REAL)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    right = "Bearer%20" + REAL[:24]
    wrong = "Bearer%20ghp_QzkxwvMpnbTyLcdjoGuvwp"
    got = {guess: await before_the_pause(proxy, guess) for guess in (right, wrong)}
    assert got[right] > 0 and got[wrong] > 0
    assert got[right] == got[wrong], got
