"""A route's password, reflected by the upstream on its own, reaches the program.

The scrubber looks for the route's secret and its encodings. For a ``basic_auth`` route the
secret is ``user:password`` and the proxy sends ``Authorization: Basic base64(user:password)``;
an upstream reads that header as the user and the password, and one that quotes what it read
(an echo endpoint, an error page: ``password 'x' expired``) quotes the password alone, which
is no form of ``user:password``: the program read the real password. Likewise a ``header``
route whose value is ``Basic {}`` with a secret that is already ``base64(user:password)``.

Closed (``nonod.credentials.injected_parts``): what an upstream decodes out of the injected
``Basic`` value (the ``user:password`` pair and the password) are needles too, each replaced
by the phantom token as the secret is.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Awaitable, Callable

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

PASSWORD = "correct-horse/battery+staple"
StartProxy = Callable[..., Awaitable[RouteProxy]]


async def quotes_the_password(request: UpstreamRequest, respond: Responder) -> None:
    """What a server that reads Basic credentials, and quotes what it read, sends back."""
    value = request.header(b"authorization") or b""
    scheme, _, encoded = value.partition(b" ")
    assert scheme == b"Basic", value
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    body = json.dumps({"user": user, "error": f"password {password} has expired",
                       "retry": "/login?pw=" + urllib.parse.quote(password, safe="")}).encode()
    await respond.whole(401, body, [(b"X-Debug-Password", password.encode()),
                                    (b"WWW-Authenticate", f'Basic realm="{user}"'.encode())])


def leaked(seen: bytes) -> list[str]:
    forms = {"plain": PASSWORD.encode(),
             "json": json.dumps(PASSWORD)[1:-1].encode(),
             "percent": urllib.parse.quote(PASSWORD, safe="").encode(),
             "base64": base64.b64encode(PASSWORD.encode())}
    return [name for name, form in forms.items() if form in seen]


@pytest.mark.parametrize("mode", ["basic_auth", "header Basic {}"])
async def test_a_password_quoted_alone_by_the_upstream_is_scrubbed(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, mode: str) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, quotes_the_password)
    pair = f"bot:{PASSWORD}"
    if mode == "basic_auth":
        route = github_route(inject_mode="basic_auth")
        secret = pair
    else:
        route = github_route(credential_format="Basic {}")
        secret = base64.b64encode(pair.encode()).decode()
    proxy = await start_route_proxy([(route, secret)],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    phantom = proxy.token.reveal()
    client = await proxy.client()
    got = await client.request("GET", "/github/user", [("Authorization", f"Bearer {phantom}")])
    assert got.status == 401
    # the upstream did read the real password (the proxy injected it)
    assert seen.requests and seen.requests[-1].header(b"authorization") == (
        b"Basic " + base64.b64encode(pair.encode()))
    whole = got.body + b"".join(value for _, value in got.headers)
    assert leaked(whole) == []  # before: ['plain', 'json', 'percent'], and the header
    assert phantom.encode() in got.body and got.header(b"X-Debug-Password") == phantom.encode()
    assert b'"user": "bot"' in got.body  # the user name is no secret: left as it is


async def test_a_short_password_is_not_searched_for_alone(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    """A password under 8 bytes would be replaced wherever its letters occur in every
    response of the route: it is not looked for alone (the whole secret still is)."""
    async def says(request: UpstreamRequest, respond: Responder) -> None:
        await respond.whole(200, b"tiny is a word; bot:tiny is the pair")

    port, _ = await start_tls_upstream(nursery, pki.server, says)
    proxy = await start_route_proxy([(github_route(inject_mode="basic_auth"), "bot:tiny")],
                                    pins={"api.github.com": f"127.0.0.1:{port}"})
    phantom = proxy.token.reveal()
    client = await proxy.client()
    got = await client.request("GET", "/github/x", [("Authorization", f"Bearer {phantom}")])
    assert got.body == b"tiny is a word; " + phantom.encode() + b" is the pair"


def test_the_parts_an_upstream_reads_out_of_the_injected_value() -> None:
    from nonod.credentials import PhantomToken, Secret, injected_parts, scrub_replacements

    basic = github_route(inject_mode="basic_auth")
    assert injected_parts(basic, Secret("bot:" + PASSWORD)) == (
        b"bot:" + PASSWORD.encode(), PASSWORD.encode())
    # an API key sent as the user with no password (Stripe's): the user is the secret
    assert injected_parts(basic, Secret("sk_live_0123456789:")) == (
        b"sk_live_0123456789:", b"sk_live_0123456789")
    # a Bearer value, or a Basic format whose secret is no base64: nothing more to find
    assert injected_parts(github_route(), Secret("bot:" + PASSWORD)) == ()
    assert injected_parts(github_route(credential_format="Basic {}"), Secret("not base64!")) == ()
    # a password that is not UTF-8 is still looked for, in the forms that read bytes
    raw = base64.b64encode(b"bot:\xff\xfe-binary-password").decode()
    token = PhantomToken.new()
    table = scrub_replacements(Secret(raw), token,
                               injected_parts(github_route(credential_format="Basic {}"),
                                              Secret(raw)))
    assert b"\xff\xfe-binary-password" in table and b"fffe2d62696e6172792d70617373776f7264" in table
