"""One HTTP/1.1 POST over trio (h11), for the OTLP and envelope sinks.

A connection per request (``Connection: close``): exporters send a batch every few seconds
at most, and a fresh connection never inherits a half-broken one. Any 2xx is acceptance;
anything else, or no answer within the timeout, is a :class:`SinkError`.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from ..proxy import _h11_lines  # noqa: F401 - a sink's answer read in linear time
from ._errors import ExportError, SinkError, describe

MAX_RESPONSE: Final = 64 * 1024


def check_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, target)`` of an http(s) URL, or :class:`ExportError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError(f"{url!r} is not an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


async def post(url: str, body: bytes, *, content_type: str,
               headers: Sequence[tuple[str, str]] = (),
               ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> bytes:
    """POST ``body``; return the response body of a 2xx answer, raise otherwise."""
    scheme, host, port, target = check_url(url)
    try:
        with trio.fail_after(timeout):
            return await _exchange(scheme, host, port, target, body, content_type, headers,
                                   ssl_context)
    except trio.TooSlowError as exc:
        raise SinkError(f"{url}: no answer within {timeout:g} s") from exc
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
            h11.ProtocolError) as exc:
        raise SinkError(f"{url}: {describe(exc)}") from exc


async def _exchange(scheme: str, host: str, port: int, target: str, body: bytes,
                    content_type: str, headers: Sequence[tuple[str, str]],
                    ssl_context: ssl.SSLContext | None) -> bytes:
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if scheme == "https":
        stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(),
                                server_hostname=host, https_compatible=True)
    async with stream:
        conn = h11.Connection(our_role=h11.CLIENT)
        request = h11.Request(method="POST", target=target, headers=[
            ("Host", host if port in (80, 443) else f"{host}:{port}"),
            ("Content-Type", content_type), ("Content-Length", str(len(body))),
            ("Connection", "close"), ("User-Agent", "nonod"), *headers,
        ])
        await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body))
                              + conn.send(h11.EndOfMessage()))
        status, received = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                received += event.data[: MAX_RESPONSE - len(received)]
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if not 200 <= status < 300:
        raise SinkError(f"{scheme}://{host}:{port}{target}: status {status}")
    return bytes(received)
