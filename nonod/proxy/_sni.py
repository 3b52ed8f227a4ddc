"""The name a TLS client asks for (SNI), read from the first bytes of a CONNECT tunnel.

A blind tunnel is allowed for the name on its CONNECT line, but a shared front end (a CDN)
picks the site by the ClientHello's ``server_name``: a tunnel to an allowed name carrying a
ClientHello for another reaches that other site. :func:`first_flight` says whether the
client's first bytes are complete enough to judge, :func:`client_hello_name` reads the name
in them (both pure), and :func:`check_first_flight` reads them from a tunnel's client and
judges them against the name the tunnel was allowed for.
"""

from __future__ import annotations

from typing import Final

import trio

from ._addresses import HostError, normalize_name

_HANDSHAKE: Final = 0x16
_CLIENT_HELLO: Final = 1
_SERVER_NAME: Final = 0
_HOST_NAME: Final = 0
_HEADER: Final = 5
#: The longest TLS plaintext record (RFC 8446 5.1).
_MAX_RECORD: Final = 1 << 14


class NotClientHello(ValueError):
    """Bytes that begin as a TLS handshake record but are no whole, well-formed ClientHello
    in its first record (fragmented, malformed, or two server names)."""


def is_tls(data: bytes | bytearray) -> bool:
    """Whether the client's first byte opens a TLS handshake record."""
    return bool(data) and data[0] == _HANDSHAKE


def first_flight(data: bytes) -> bool:
    """Whether ``data`` (the client's first bytes) can be judged: it is not TLS, or it holds
    the whole first record. Raises NotClientHello for a record longer than TLS allows."""
    if not is_tls(data):
        return bool(data)
    if len(data) < _HEADER:
        return False
    length = int.from_bytes(data[3:5], "big")
    if length > _MAX_RECORD:
        raise NotClientHello("record too long")
    return len(data) >= _HEADER + length


def client_hello_name(data: bytes) -> str | None:
    """The ``server_name`` of the ClientHello in the first record of ``data`` (whole, as
    :func:`first_flight` says), or None when it names none. Raises NotClientHello."""
    record = memoryview(data)[_HEADER:_HEADER + int.from_bytes(data[3:5], "big")]
    reader = _Reader(record)
    if reader.number(1) != _CLIENT_HELLO:
        raise NotClientHello("not a ClientHello")
    body = _Reader(reader.take(reader.number(3)))  # a ClientHello split over records: too short
    body.take(2 + 32)  # legacy version, random
    body.vector(1)  # session id
    body.vector(2)  # cipher suites
    body.vector(1)  # compression methods
    if body.done():
        return None  # no extensions
    extensions = _Reader(body.vector(2))
    name: str | None = None
    seen: set[int] = set()
    while not extensions.done():
        kind = extensions.number(2)
        payload = extensions.vector(2)
        if kind in seen:
            raise NotClientHello("an extension twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _server_name(_Reader(payload))
    return name


def _server_name(reader: _Reader) -> str:
    names = _Reader(reader.vector(2))
    if not reader.done():
        raise NotClientHello("bytes after the server name list")
    found: list[str] = []
    while not names.done():
        kind = names.number(1)
        value = bytes(names.vector(2))
        if kind == _HOST_NAME:
            found.append(value.decode("ascii", "replace"))
    if len(found) != 1:
        raise NotClientHello("not exactly one host name")
    return found[0]


async def check_first_flight(client: trio.abc.Stream, upstream: trio.SocketStream,
                             data: bytes, host: str, timeout: float) -> bytes | None:
    """Read the client's first bytes of a tunnel allowed for ``host`` (``data``: those read
    already) and return them, to be sent upstream first; None to end the tunnel without
    relaying a byte of them. A TLS ClientHello must name ``host`` or nothing; bytes that
    are not TLS pass; when the upstream speaks first (SSH, SMTP), nothing is checked. A
    ClientHello that is fragmented or malformed, or that does not come within ``timeout``,
    ends the tunnel (fail closed)."""
    buffer = bytearray(data)
    with trio.move_on_after(timeout) as waited:
        try:
            while not first_flight(bytes(buffer)):
                more = (await _client_or_upstream(client, upstream) if not buffer
                        else await client.receive_some(_MAX_RECORD + _HEADER))
                if more is None:
                    return b""  # the upstream spoke first: not a TLS client's tunnel
                if not more:
                    break  # the client ended its side
                buffer += more
        except (trio.BrokenResourceError, trio.ClosedResourceError, NotClientHello):
            return None
    try:
        if not first_flight(bytes(buffer)):
            # Nothing in time (what came later would pass unseen), or a record cut short.
            return None if waited.cancelled_caught or buffer else b""
        if not is_tls(buffer):
            return bytes(buffer)
        name = client_hello_name(bytes(buffer))
        if name is not None and normalize_name(name) != host:
            return None
    except (NotClientHello, HostError):
        return None
    return bytes(buffer)


async def _client_or_upstream(client: trio.abc.Stream, upstream: trio.SocketStream
                              ) -> bytes | None:
    """The client's next bytes, or None if the upstream has something to say first."""
    result: list[bytes | None] = []
    async with trio.open_nursery() as nursery:
        async def from_client() -> None:
            result.append(bytes(await client.receive_some(_MAX_RECORD + _HEADER)))
            nursery.cancel_scope.cancel()

        async def from_upstream() -> None:
            await trio.lowlevel.wait_readable(upstream.socket)
            result.append(None)
            nursery.cancel_scope.cancel()

        nursery.start_soon(from_client)
        nursery.start_soon(from_upstream)
    # Both may have finished: bytes read are never dropped.
    return next((piece for piece in result if piece is not None), None)


class _Reader:
    __slots__ = ("_at", "_data")

    def __init__(self, data: memoryview) -> None:
        self._data, self._at = data, 0

    def take(self, count: int) -> memoryview:
        if self._at + count > len(self._data):
            raise NotClientHello("truncated")
        piece = self._data[self._at:self._at + count]
        self._at += count
        return piece

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size: int) -> memoryview:
        return self.take(self.number(size))

    def done(self) -> bool:
        return self._at == len(self._data)
