"""Sans-IO pieces of the credential routes: the request target, the phantom token check, the
upstream request head with the credential injected, the response head the program gets.

Everything here is a pure function of its arguments (header lists in, header lists out), so
every case is tested without sockets; :mod:`nonod.proxy._reverse` does the I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Final, Literal
from urllib.parse import quote, unquote, unquote_plus

import msgspec

from ..credentials import PhantomToken, Route, Scrubber, Secret
from ._http import proxy_authorized

Headers = Sequence[tuple[bytes, bytes]]
AuthOutcome = Literal["ok", "missing", "invalid"]

#: Replaces a phantom token wherever one would show in an event (``url_path`` routes).
MASK: Final = "[phantom]"

# Headers that never go upstream from the program: hop-by-hop (RFC 9110 7.6.1), everything
# addressed to a proxy, forwarding artefacts that would describe the sandbox, and
# Accept-Encoding (we ask for identity, so that reflected secrets can be found).
_REQUEST_DROP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"expect", b"forwarded", b"x-real-ip", b"via",
    b"x-nono-token", b"accept-encoding",
})
_RESPONSE_DROP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})
# What a WebSocket handshake sets itself; never copied from the program's request.
_WEBSOCKET_OWN: Final = frozenset({
    b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
    b"sec-websocket-protocol", b"sec-websocket-accept", b"content-length",
})


class BadTarget(ValueError):
    """A request target that is not ``/<route>[/path][?query]`` (answered 400)."""


class RouteTarget(msgspec.Struct, frozen=True, kw_only=True):
    """``/<route><path>?<query>`` taken apart: ``path`` starts with ``/``; ``query`` is
    empty or starts with ``?``."""

    route: str
    path: str
    query: str


class UpstreamHead(msgspec.Struct, frozen=True, kw_only=True):
    """The request head for the upstream. ``target`` holds the real value in ``url_path``
    and ``query_param`` modes and must never be logged; ``into`` says where the value went."""

    target: bytes
    headers: list[tuple[bytes, bytes]]
    into: str


def split_target(target: bytes) -> RouteTarget:
    """Split an origin-form target into route name, path and query. The route name ends at
    the first ``/`` or ``?``, so ``/github.evil/x`` names the route ``github.evil`` (which
    does not exist), never ``github``."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise BadTarget("not ASCII") from None
    if not text.startswith("/") or "#" in text:
        raise BadTarget("not an origin-form target")
    rest = text[1:]
    end = len(rest)
    for stop in "/?":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    name, rest = rest[:end], rest[end:]
    path, sep, query = rest.partition("?")
    return RouteTarget(route=name, path=path or "/", query=sep + query if sep else "")


#: Headers and a query parameter by which an upstream may run another method than the
#: request's (Google APIs, Rack's MethodOverride, Express's method-override...) or serve
#: another path (IIS, Symfony's trusted X-Original-URL / X-Rewrite-URL).
_OVERRIDE_HEADERS: Final = frozenset({
    b"x-http-method-override", b"x-http-method", b"x-method-override",
    b"x-original-url", b"x-rewrite-url",
})
_METHOD_OVERRIDE_PARAM: Final = "_method"


def overrides_request(headers: Headers, query: str) -> bool:
    """Whether a request names another method or path for the upstream than its own: an
    override header (also with ``_`` for ``-``: CGI-style servers such as WEBrick, and
    Rack or WSGI servers that keep such names, file ``X_HTTP_METHOD_OVERRIDE`` under the
    same key as ``X-HTTP-Method-Override``), or a ``_method`` query parameter (spelt in any
    case, or percent-encoded)."""
    if any(name.lower().replace(b"_", b"-") in _OVERRIDE_HEADERS for name, _ in headers):
        return True
    # ``;`` separates pairs too for some parsers (Rack's, Python's before 3.9.2).
    # ``_method[]=DELETE`` is a list to qs (Express), whose method-override takes its first.
    return any(_field_name(pair.partition("=")[0]) == _METHOD_OVERRIDE_PARAM
               for _, _, raw in _query_pairs(query) for pair in raw.split(";"))


def _field_name(raw: str) -> str:
    """A query field's name as the most lenient parser files it, lower-cased: decoded (``+``
    a space), up to a ``[`` or a NUL (PHP takes the name's ``strlen``), and as PHP names it
    (under Symfony and Laravel): leading spaces dropped, every ``.`` and space made ``_``
    (``.method`` and ``_method%00x`` are ``_method``)."""
    name = unquote_plus(raw).lower().partition("\0")[0].partition("[")[0].lstrip(" ")
    return name.replace(".", "_").replace(" ", "_")


def is_websocket(headers: Headers) -> bool:
    """Whether a request asks to upgrade to WebSocket (``Upgrade: websocket`` with
    ``Connection: upgrade``)."""
    upgrade = connection = False
    for name, value in headers:
        lower = name.lower()
        tokens = {t.strip().lower() for t in value.split(b",")}
        if lower == b"upgrade" and b"websocket" in tokens:
            upgrade = True
        elif lower == b"connection" and b"upgrade" in tokens:
            connection = True
    return upgrade and connection


def check_phantom(route: Route, token: PhantomToken, headers: Headers, target: RouteTarget
                  ) -> AuthOutcome:
    """Whether the request carries the session's phantom token where ``route`` expects it.

    ``header``/``basic_auth``: in ``inject_header`` (exactly once), as the bare token or after
    a scheme (``Bearer``, ``token``, the literal prefix of ``credential_format``), or as the
    password of ``Basic``. ``url_path``: inside ``path_pattern`` in the path.
    ``query_param``: the value of ``query_param_name``. When that place is empty, a
    ``Proxy-Authorization`` with the token is accepted instead (for clients that cannot set
    the header), as nono does. A token that is present and wrong is never retried elsewhere.
    """
    if route.inject_mode == "url_path":
        found = _token_in_path(route, target.path)
    elif route.inject_mode == "query_param":
        found = _token_in_query(route, target.query)
    else:
        found = _token_in_header(route, headers)
    if found is None:
        proxy = [v for n, v in headers if n.lower() == b"proxy-authorization"]
        if not proxy:
            return "missing"
        return "ok" if proxy_authorized(headers, token.reveal()) else "invalid"
    return "ok" if found and any(token.matches(candidate) for candidate in found) else "invalid"


def _token_in_header(route: Route, headers: Headers) -> list[bytes] | None:
    wanted = route.inject_header.lower().encode("ascii")
    values = [value.strip() for name, value in headers if name.lower() == wanted]
    if not values:
        return None
    if len(values) > 1:
        return []  # ambiguous: invalid
    value = values[0]
    candidates = [value]
    prefix = route.credential_format.split("{}", 1)[0].encode("utf-8", "replace")
    if prefix and value.lower().startswith(prefix.lower()):
        candidates.append(value[len(prefix):].strip())
    scheme, _, rest = value.partition(b" ")
    rest = rest.strip()
    if scheme.lower() in (b"bearer", b"token"):
        candidates.append(rest)
    elif scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        user, sep, password = decoded.partition(b":")
        candidates.append(password if sep else user)
    return candidates


def _token_in_path(route: Route, path: str) -> list[bytes] | None:
    pattern = route.path_pattern or "{}"
    before, after = pattern.split("{}", 1)
    start = path.find(before)
    if start == -1:
        return None
    begin = start + len(before)
    if after:
        end = path.find(after, begin)
        if end == -1:
            return []
    else:
        end = path.find("/", begin)
        end = len(path) if end == -1 else end
    return [path[begin:end].encode("ascii", "replace")]


def _query_pairs(query: str) -> list[tuple[str, str, str]]:
    """(name, value, pair as written) for each ``&``-separated pair, nothing decoded."""
    pairs = []
    for pair in query.removeprefix("?").split("&"):
        if pair:
            name, _, value = pair.partition("=")
            pairs.append((name, value, pair))
    return pairs


def _token_in_query(route: Route, query: str) -> list[bytes] | None:
    values = [v for n, v, _ in _query_pairs(query) if n == route.query_param_name]
    if not values:
        return None
    if len(values) > 1:
        return []
    return [unquote(values[0]).encode("utf-8", "replace")]


def upstream_head(route: Route, secret: Secret | None, token: PhantomToken, headers: Headers,
                  *, forward_path: str, query: str) -> UpstreamHead:
    """The upstream request head: the route's base path joined to ``forward_path`` (the
    checked, normalised path) and the query, the program's end-to-end headers without the
    phantom token or any proxy artefact, ``Host`` for the upstream, and the credential
    injected as the route says (none for a filter-only route, ``secret`` None: the program's
    own headers then go through)."""
    phantom = token.reveal().encode("ascii")
    drop = set(_REQUEST_DROP)
    if secret is not None and route.inject_mode in ("header", "basic_auth"):
        drop.add(route.inject_header.lower().encode("ascii"))
    out: list[tuple[bytes, bytes]] = [(b"Host", route.authority.encode("ascii"))]
    out += _filtered(headers, drop, phantom)
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    path = forward_path
    query_out = _strip_token_param(query, phantom)
    into = ""
    if secret is None:
        pass  # a filter-only route: nothing to inject
    elif route.inject_mode in ("header", "basic_auth"):
        out.append((route.inject_header.encode("ascii"),
                    route.injected_value(secret).encode("utf-8")))
        into = route.inject_header
    elif route.inject_mode == "url_path":
        path = _inject_path(route, forward_path, secret)
        into = "path"
    else:
        query_out = _inject_query(route, query_out, secret)
        into = f"query:{route.query_param_name}"
    out.append((b"Accept-Encoding", b"identity"))
    if chunked:
        out.append((b"Transfer-Encoding", b"chunked"))
    target = (route.base_path + path + query_out).encode("ascii")
    return UpstreamHead(target=target, headers=out, into=into)


def _filtered(headers: Headers, drop: set[bytes], phantom: bytes
              ) -> Iterable[tuple[bytes, bytes]]:
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b",") if t.strip())
    for name, value in headers:
        lower = name.lower()
        if (lower in drop or lower in listed or lower.startswith(b"proxy-")
                or lower.startswith(b"x-forwarded-") or phantom in value):
            continue
        yield name, value


def _inject_path(route: Route, path: str, secret: Secret) -> str:
    pattern = route.path_pattern or "{}"
    replacement = route.path_replacement or pattern
    before, after = pattern.split("{}", 1)
    start = path.find(before)
    if start == -1 or (after and path.find(after, start + len(before)) == -1):
        raise BadTarget("the path does not hold the route's path_pattern")
    begin = start + len(before)
    if after:
        end = path.find(after, begin) + len(after)
    else:
        found = path.find("/", begin)
        end = len(path) if found == -1 else found
    value = quote(secret.reveal(), safe="")
    return path[:start] + replacement.replace("{}", value) + path[end:]


def _inject_query(route: Route, query: str, secret: Secret) -> str:
    """The query with ``query_param_name`` set to the real value (replacing any)."""
    name = route.query_param_name or ""
    pairs = [raw for n, _, raw in _query_pairs(query) if n != name]
    pairs.append(f"{name}={quote(secret.reveal(), safe='')}")
    return "?" + "&".join(pairs)


def _strip_token_param(query: str, phantom: bytes) -> str:
    """The query without any pair that carries the phantom token (decoded or not)."""
    if not query:
        return query
    text = phantom.decode("ascii")
    kept = [raw for _, _, raw in _query_pairs(query) if text not in unquote(raw)]
    return "?" + "&".join(kept) if kept else ""


def downstream_head(headers: Headers, scrubber: Scrubber | None, *, has_body: bool
                    ) -> list[tuple[bytes, bytes]]:
    """The upstream response's headers as the program gets them: end-to-end only, every
    value scrubbed; without ``Content-Length`` (and ``Content-Encoding``, which the proxy has
    decoded) when a body follows, because scrubbing may change its length.

    A bodiless answer (``HEAD``, ``304``) keeps its length, unless it names a content
    coding: then neither, as a ``GET`` through the proxy would carry neither (nor the coded
    body's ``Content-Range``, whose total is that length too). Its length is
    the compressed length of a body the program never sees, which for a body that reflects
    the credential and something the program chose is shorter the more of the key the
    program guessed (BREACH; docs/security-model.md, thirtieth pass)."""
    listed: set[bytes] = set()
    coded = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            listed.update(t.strip().lower() for t in value.split(b",") if t.strip())
        elif lower == b"content-encoding":
            coded = coded or any(t.strip().lower() not in (b"", b"identity")
                                 for t in value.split(b","))
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in _RESPONSE_DROP or lower in listed or lower.startswith(b"proxy-"):
            continue
        if (has_body or coded) and lower in (b"content-length", b"content-encoding"):
            continue
        if coded and lower == b"content-range":  # the coded body's range and length
            continue
        out.append((name, scrubber.replace_all(value) if scrubber is not None else value))
    return out


def websocket_headers(route: Route, secret: Secret | None, token: PhantomToken,
                      headers: Headers) -> list[tuple[bytes, bytes]]:
    """The extra headers of the upstream WebSocket handshake: the program's end-to-end
    headers (not the handshake's own, which the client library sets) and the credential
    (none for a filter-only route)."""
    drop = set(_REQUEST_DROP) | _WEBSOCKET_OWN
    injects = secret is not None and route.inject_mode in ("header", "basic_auth")
    if injects:
        drop.add(route.inject_header.lower().encode("ascii"))
    out = list(_filtered(headers, drop, token.reveal().encode("ascii")))
    if injects and secret is not None:
        out.append((route.inject_header.encode("ascii"),
                    route.injected_value(secret).encode("utf-8")))
    return out


def content_decoding(headers: Headers) -> Literal["identity", "gzip", "unsupported"]:
    """How the proxy must decode a response body before scrubbing it."""
    codings = [t.strip().lower() for n, v in headers if n.lower() == b"content-encoding"
               for t in v.split(b",") if t.strip()]
    codings = [c for c in codings if c != b"identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in (b"gzip", b"x-gzip", b"deflate"):
        return "gzip"
    return "unsupported"


def event_path(path: str, token: PhantomToken, needles: Iterable[bytes] = ()) -> str:
    """A request path fit for an event: the phantom token masked, and any form of the real
    secret (``needles``, should a program have put it there) redacted; at most 512
    characters."""
    text = path.replace(token.reveal(), MASK)
    for needle in sorted(needles, key=len, reverse=True):
        shown = needle.decode("utf-8", "replace")
        if shown in text:
            text = text.replace(shown, "[redacted]")
    return text[:512]
