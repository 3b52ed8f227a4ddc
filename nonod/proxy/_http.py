"""Sans-IO helpers on top of h11: request targets, proxy authentication, header filtering
and our own error responses. No sockets, clocks or threads here; h11 does all the parsing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Sequence
from typing import Final

import h11

from . import _h11_lines  # noqa: F401 - h11's header lines read in linear time
from ._decide import Reason

Headers = Sequence[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 7.6.1) and everything addressed to the proxy itself. Host is
# rebuilt from the checked target; Expect is answered by us.
_HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"expect",
})

_PHRASES: Final = {
    400: b"Bad Request",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

_MESSAGES: Final = {
    400: "the proxy could not understand the request",
    403: "the session's network policy does not allow this destination",
    405: "the proxy does not forward this method",
    407: "the proxy needs the session's credentials (HTTP_PROXY has them)",
    408: "the request took too long to arrive",
    431: "the request head is too large",
    500: "the proxy failed on this request",
    501: "the proxy does not implement this",
    502: "the proxy could not reach the destination",
    503: "the session has too many open proxy connections",
    504: "the destination did not answer in time",
}


class BadRequest(Exception):
    """A request the proxy answers with an error: ``status`` and the audit ``reason``."""

    def __init__(self, status: int, reason: Reason) -> None:
        super().__init__(f"{status} {reason.value}")
        self.status = status
        self.reason = reason


def joined(conn: h11.Connection, first: h11.Data) -> tuple[h11.Data, object | None]:
    """``first`` with every Data event ``conn`` holds right after it (from bytes read
    already) as one, and the event that ended the run (None: h11 needs more bytes). A body
    in tiny chunks then goes on as one write per read, not one per chunk (before, a body of
    one-byte chunks cost the event loop some 50 us per byte, every session's proxy with it)."""
    pieces = [first.data]
    while True:
        event = conn.next_event()
        if not isinstance(event, h11.Data):
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            return h11.Data(data=data), None if event is h11.NEED_DATA else event
        pieces.append(event.data)


def connect_target(target: bytes) -> tuple[str, int]:
    """``host`` and ``port`` of a CONNECT request target (authority form, port required)."""
    text = _ascii(target)
    if any(c in text for c in "/?#@\\"):
        raise BadRequest(400, Reason.BAD_REQUEST)
    host, port = _split_authority(text, default_port=None)
    return host, port


def absolute_target(target: bytes) -> tuple[str, int, bytes]:
    """``host``, ``port`` and the origin-form target of an ``http://`` absolute URI."""
    text = _ascii(target)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "http":
        raise BadRequest(400, Reason.NOT_A_PROXY_REQUEST)
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, remainder = rest[:end], rest[end:]
    if "@" in authority or "\\" in authority or "#" in remainder:
        raise BadRequest(400, Reason.BAD_REQUEST)
    host, port = _split_authority(authority, default_port=80)
    if not remainder.startswith("/"):
        remainder = "/" + remainder
    return host, port, remainder.encode("ascii")


def _ascii(target: bytes) -> str:
    try:
        return target.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, Reason.BAD_REQUEST) from None


def _split_authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise BadRequest(400, Reason.BAD_REQUEST)
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise BadRequest(400, Reason.BAD_REQUEST)
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, None
    if not host:
        raise BadRequest(400, Reason.BAD_REQUEST)
    if not port_text:
        if default_port is None:
            raise BadRequest(400, Reason.BAD_REQUEST)
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise BadRequest(400, Reason.BAD_REQUEST)
    return host, int(port_text)


def proxy_authorized(headers: Headers, token: str) -> bool:
    """Whether the request carries the session's proxy credentials: exactly one
    ``Proxy-Authorization`` header, either ``Basic base64(nono:<token>)`` (what clients send
    for the userinfo of ``HTTP_PROXY``) or ``Bearer <token>``. Compared in constant time."""
    values = [value for name, value in headers if name.lower() == b"proxy-authorization"]
    if len(values) != 1:
        return False
    scheme, _, credentials = values[0].strip().partition(b" ")
    credentials = credentials.strip()
    expected = token.encode()
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, b"nono:" + expected)
    if scheme.lower() == b"bearer":
        return hmac.compare_digest(credentials, expected)
    return False


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def _end_to_end(headers: Headers) -> Iterable[tuple[bytes, bytes]]:
    listed = _connection_tokens(headers)
    for name, value in headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in listed or lower.startswith(b"proxy-"):
            continue
        yield name, value


def is_chunked(headers: Headers) -> bool:
    return any(name.lower() == b"transfer-encoding" for name, _ in headers)


def check_framing(headers: Headers) -> None:
    """Refuse a message with both Content-Length and Transfer-Encoding (request smuggling):
    h11 would let Transfer-Encoding win, another server on the way might not."""
    names = {name.lower() for name, _ in headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise BadRequest(400, Reason.BAD_REQUEST)


def upstream_request_headers(headers: Headers, authority: bytes) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream for a forwarded plain-HTTP request: end-to-end headers
    only, ``Host`` rebuilt from the checked target, one request per connection."""
    out = [(b"Host", authority)]
    out += _end_to_end(headers)
    if is_chunked(headers):
        out.append((b"Transfer-Encoding", b"chunked"))
    out.append((b"Connection", b"close"))
    return out


def downstream_response_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The headers of an upstream response as the client gets them: end-to-end headers only;
    h11 frames the body again (chunked or by length) for our client."""
    chunked = is_chunked(headers)
    out = [
        (name, value)
        for name, value in _end_to_end(headers)
        if not (chunked and name.lower() == b"content-length")
    ]
    out.append((b"Connection", b"close"))
    return out


def error_response(status: int, reason: Reason) -> tuple[h11.Response, bytes]:
    """Our own short plain-text answer. It names the status and the reason code, never the
    request's contents (no header values, no target, no exception text)."""
    body = f"nono proxy: {_MESSAGES.get(status, 'error')} ({reason.value})\n".encode()
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
        (b"Cache-Control", b"no-store"),
    ]
    if status == 407:
        headers.append((b"Proxy-Authenticate", b'Basic realm="nono"'))
    return h11.Response(status_code=status, headers=headers,
                        reason=_PHRASES.get(status, b"Error")), body


def path_for_audit(target: bytes) -> str:
    """The path of an origin-form target, without the query string, for audit events."""
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    return path[:512].decode("ascii", "replace")


def child_environment(port: int, token: str) -> tuple[tuple[str, str], ...]:
    """The variables that point a sandboxed program at its proxy, as nono sets them.

    ``HTTP_PROXY``/``HTTPS_PROXY`` (and lower case) carry the session token as userinfo, so
    clients send ``Proxy-Authorization: Basic base64(nono:<token>)`` by themselves;
    ``NONO_PROXY_TOKEN`` holds the token for clients that prefer ``Bearer``;
    ``NO_PROXY`` (and ``no_proxy``, and ``NONO_NO_PROXY`` as nono sets it) keeps loopback
    traffic inside the sandbox; ``NODE_USE_ENV_PROXY=1`` makes
    Node's built-in ``fetch`` honour the proxy variables.
    """
    if not 1 <= port <= 65535:
        raise ValueError("port out of range")
    if not token or any(c in token for c in ":@/?#[]% \t\r\n"):
        raise ValueError("the token must be non-empty and URL-safe")
    url = f"http://nono:{token}@127.0.0.1:{port}"
    no_proxy = "localhost,127.0.0.1"
    return (
        ("HTTP_PROXY", url),
        ("HTTPS_PROXY", url),
        ("http_proxy", url),
        ("https_proxy", url),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
        ("NONO_NO_PROXY", no_proxy),
        ("NONO_PROXY_TOKEN", token),
        ("NODE_USE_ENV_PROXY", "1"),
    )
