"""A ``_method`` override spelt as PHP reads variable names: ``.method``.

On a route with endpoint rules the proxy refuses a request that names another method for the
upstream: an override header, or a ``_method`` field in the query or the body (Rack, Express,
Symfony and Laravel run the method it names, with the real key). PHP, under Symfony and
Laravel (which honour ``_method`` by default), files the query's and a form body's fields
under names it changes first: leading spaces are dropped, every ``.`` or space before a
``[`` becomes ``_``, and a NUL ends the name. So ``?.method=DELETE``, ``?_method%00x=``, a
form body ``.method=DELETE`` or ``+.method=``, and a multipart part named ``.method`` are
``$_GET['_method']``/``$_POST['_method']`` to it: a rule that allows ``POST`` had the
upstream run ``DELETE``.

Now the names are compared as PHP files them. A real proxy and a real TLS upstream that takes
its method as Symfony does from fields named as PHP names them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

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
TARGET = "/github/repos/o/r/issues/1/comments"
FORM = [("Content-Type", "application/x-www-form-urlencoded")]


def php_name(raw: str) -> str:
    """A field name as PHP files it (``php_register_variable_ex``): cut at a NUL (it takes
    the name's ``strlen``), leading spaces dropped, then ``.`` and spaces up to the first
    ``[`` made ``_``; what comes before the ``[``."""
    name = raw.partition("\0")[0].lstrip(" ")
    head, bracket, _ = name.partition("[")
    return head.replace(".", "_").replace(" ", "_") if bracket or head else ""


def php_fields(encoded: str) -> dict[str, str]:
    fields = {}
    for pair in encoded.split("&"):
        name, _, value = pair.partition("=")
        fields.setdefault(php_name(unquote_plus(name)), unquote_plus(value))
    return fields


async def symfony(request: UpstreamRequest, respond: Responder) -> None:
    """Says the method it would run: Symfony's ``getMethod`` with the override on (Laravel's
    default), over PHP's ``$_POST`` and ``$_GET``."""
    method = request.method.decode()
    if method == "POST":
        query = request.target.decode().partition("?")[2]
        body = php_fields(request.body.decode()) if request.header(b"content-type") == (
            b"application/x-www-form-urlencoded") else {}
        if b"multipart/" in (request.header(b"content-type") or b""):
            for part in request.body.split(b"\r\n--"):
                if b'name=".method"' in part or b'name="_method\0' in part:
                    body["_method"] = part.rsplit(b"\r\n\r\n", 1)[1].split(b"\r\n")[0].decode()
        method = body.get("_method") or php_fields(query).get("_method") or method
    await respond.whole(200, method.upper().encode())


@pytest.mark.parametrize(("query", "body", "headers"), [
    ("?.method=DELETE", b"{}", []),
    ("?%2Emethod=DELETE", b"{}", []),
    ("?+.method=DELETE", b"{}", []),
    ("?.method[]=DELETE", b"{}", []),
    ("", b".method=DELETE", FORM),
    ("", b"a=1&%2emethod=DELETE", FORM),
    ("", b"a=1&+.method=DELETE", FORM),
    ("", b"a=1&%20%2Emethod=DELETE", FORM),
    ("", b'--b\r\nContent-Disposition: form-data; name=".method"\r\n\r\nDELETE\r\n--b--\r\n',
     [("Content-Type", "multipart/form-data; boundary=b")]),
    ("?_method%00x=DELETE", b"{}", []),
    ("", b"a=1&_method%00=DELETE", FORM),
    ("", b"a=1&%2Emethod%00%00junk=DELETE", FORM),
    ("", b'--b\r\nContent-Disposition: form-data; name="_method\0x"\r\n\r\nDELETE\r\n--b--\r\n',
     [("Content-Type", "multipart/form-data; boundary=b")]),
], ids=["query", "query-escaped", "query-space", "query-list", "form", "form-escaped",
        "form-space", "form-escaped-space", "multipart", "query-nul", "form-nul",
        "form-dot-nul", "multipart-nul"])
async def test_an_override_named_as_php_names_it_is_refused(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy, query: str,
        body: bytes, headers: list[tuple[str, str]]) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, symfony)
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy = await start_route_proxy([(route, REAL)], pins={"api.github.com": f"127.0.0.1:{port}"})
    auth = ("Authorization", f"Bearer {proxy.token.reveal()}")
    client = await proxy.client()
    response = await client.request("POST", TARGET + query, [auth, *headers], body=body)
    # Before: 200 "DELETE", the upstream running a method no rule allows, with the real key.
    assert response.status == 403, (response.status, response.body)
    assert json.loads(response.body)["reason"] == "method_override"
    assert seen.requests == []
    client = await proxy.client()
    plain = await client.request("POST", TARGET + "?a.b=1", [auth, *FORM], body=b"x.y=1")
    assert (plain.status, plain.body) == (200, b"POST")


@pytest.mark.parametrize("pieces", [
    [b"a=1&" + b"+" * 9000, b".method=DELETE"],
    [b"a=1&" + b"%20" * 3000, b"%2Emethod=DELETE"],
    [b"a=1&" + b" " * 9000, b".method=DELETE"],
    [b"a=1&%2", b"0.method=DELETE"],
], ids=["plus-run", "escaped-run", "space-run", "split-escape"])
def test_a_php_name_split_after_a_long_run_of_spaces_is_seen(pieces: list[bytes]) -> None:
    """PHP drops any number of leading spaces of a name: the ``&`` before a run of them,
    however long, is still there when the piece with ``.method`` comes."""
    from nonod.proxy._bodyoverride import BodyOverrideWatch

    watch = BodyOverrideWatch()
    assert any([watch.feed(piece) for piece in pieces]) or watch.end()
    innocent = BodyOverrideWatch()
    assert not innocent.feed(b"a=1&" + b"+" * 9000) and not innocent.feed(b"x.y=1")
    assert not innocent.end()
