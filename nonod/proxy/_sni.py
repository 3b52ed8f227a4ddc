"""The first bytes of a CONNECT tunnel: the name a TLS client asks for (SNI), or plain HTTP.

A blind tunnel is allowed for the name on its CONNECT line, but a shared front end (a CDN)
picks the site by the ClientHello's ``server_name``, or for plain HTTP by each request's
``Host``: a tunnel to an allowed name carrying a ClientHello for another, or a request for
another, reaches that other site. :func:`first_flight` says whether the client's first bytes
are complete enough to judge, :func:`client_hello_name` reads the name in a ClientHello and
:func:`request_line` spots HTTP (all pure), and :func:`check_first_flight` reads them from a
tunnel's client and judges them against the name the tunnel was allowed for.
"""

from __future__ import annotations

from typing import Final

import trio

from ._addresses import HostError, normalize_name
from ._decide import Reason

_HANDSHAKE: Final = 0x16
_CLIENT_HELLO: Final = 1
_SERVER_NAME: Final = 0
_HOST_NAME: Final = 0
_HEADER: Final = 5
#: The longest TLS plaintext record (RFC 8446 5.1).
_MAX_RECORD: Final = 1 << 14
_TOKEN: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                          b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VERSION: Final = b"HTTP/"
#: First bytes still undecided after this many count as a request line (fail closed).
_MAX_LINE: Final = 8192
_BLANKS: Final = frozenset(b" \t")
#: A request line's parts before its version, each the bytes it is made of: the method, the
#: blanks after it, the target (any visible byte), the blanks after that.
_PARTS: Final = (_TOKEN, _BLANKS, frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100)),
                 _BLANKS)


class NotClientHello(ValueError):
    """Bytes that begin as a TLS handshake record but are no whole, well-formed ClientHello
    in its first record (fragmented, malformed, or two server names)."""


def is_tls(data: bytes | bytearray) -> bool:
    """Whether the client's first byte opens a TLS handshake record."""
    return bool(data) and data[0] == _HANDSHAKE


def first_flight(data: bytes | bytearray, line: RequestLine | None = None) -> bool:
    """Whether ``data`` (the client's first bytes) can be judged: the whole first record of
    TLS, or enough of anything else to tell an HTTP request line (or ``_MAX_LINE`` bytes
    without telling). Raises NotClientHello for a record longer than TLS allows. ``line``:
    the reader of the request line that read a shorter ``data`` already (it reads on)."""
    if not is_tls(data):
        return (line or RequestLine()).judge(data) is not None or len(data) >= _MAX_LINE
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
                             data: bytes, host: str, timeout: float) -> bytes | Reason:
    """Read the client's first bytes of a tunnel allowed for ``host`` (``data``: those read
    already) and return them, to be sent upstream first; or the reason to end the tunnel
    without relaying a byte of them. A TLS ClientHello must name ``host`` or nothing
    (``sni_mismatch``); an HTTP request line (plain HTTP, or h2c's preface, whose ``Host``
    the proxy could not hold to ``host`` for the connection's later requests) is refused
    (``plain_http_in_tunnel``); other bytes pass, and so does everything once the upstream
    speaks first (SSH, SMTP). A ClientHello that is fragmented or malformed, or first bytes
    not judged within ``timeout``, end the tunnel (fail closed)."""
    buffer = bytearray(data)
    line = RequestLine()  # read on as bytes come, never again from the start
    read, spoke, broken = False, False, False
    with trio.move_on_after(timeout) as waited:
        # One watch of the upstream for the whole wait, not one per read (a client sending
        # its bytes one at a time costs a read each, not a pair of tasks each).
        async with trio.open_nursery() as nursery:
            async def upstream_speaks() -> None:
                nonlocal spoke
                await trio.lowlevel.wait_readable(upstream.socket)
                spoke = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(upstream_speaks)
            try:
                while not first_flight(buffer, line):
                    more = await client.receive_some(_MAX_RECORD + _HEADER)
                    if not more:
                        break  # the client ended its side
                    buffer += more  # bytes read are never dropped, whoever came first
                read = True
            except (trio.BrokenResourceError, trio.ClosedResourceError, NotClientHello):
                broken = True
            nursery.cancel_scope.cancel()
    if broken:
        return Reason.SNI_MISMATCH
    if spoke and not read:  # the upstream spoke first: judged by what came before
        return Reason.SNI_MISMATCH if is_tls(buffer) else bytes(buffer)
    whole = bytes(buffer)
    if not whole:  # the client said nothing, and ended its side or ran out of time
        return Reason.REQUEST_TIMEOUT if waited.cancelled_caught else whole
    if not is_tls(whole):
        if line.judge(whole) is False:
            return whole
        return Reason.PLAIN_HTTP_IN_TUNNEL  # a request line, or still undecided: fail closed
    try:
        if not first_flight(whole):
            return Reason.SNI_MISMATCH  # cut short, or not whole in time
        name = client_hello_name(whole)
        if name is not None and normalize_name(name) != host:
            return Reason.SNI_MISMATCH
    except (NotClientHello, HostError):
        return Reason.SNI_MISMATCH
    return whole


def request_line(data: bytes | bytearray) -> bool | None:
    """Whether ``data`` opens with an HTTP request line, ``METHOD SP TARGET SP HTTP/`` (also
    h2c's ``PRI * HTTP/2.0``), read as leniently as servers do (empty lines before it, runs
    of spaces or tabs, any case of ``HTTP``): True, False, or None while what came could
    still become one."""
    return RequestLine().judge(data)


class RequestLine:
    """:func:`request_line` read on as the bytes come: each :meth:`judge` is given what came
    so far (what it was given before, and more) and goes on where the last one stopped, so
    first bytes that come one at a time are read once in all, not once per read (before, a
    client sending its 8 KiB a byte at a time cost the event loop seconds of CPU)."""

    __slots__ = ("_at", "_phase", "_start", "_verdict")

    def __init__(self) -> None:
        # phases: 0 empty lines, 1 to 4 the _PARTS, 5 the version
        self._at = self._phase = self._start = 0
        self._verdict: bool | None = None

    def judge(self, data: bytes | bytearray) -> bool | None:
        """True, False, or None while ``data`` could still become a request line."""
        if self._verdict is None:
            self._verdict = self._read(data)
        return self._verdict

    def _read(self, data: bytes | bytearray) -> bool | None:
        end = len(data)
        at, phase, start = self._at, self._phase, self._start
        try:
            if phase == 0:
                while at < end and data[at] in b"\r\n":
                    at += 1
                if at == end:
                    return None
                phase, start = 1, at
            while phase <= len(_PARTS):
                part = _PARTS[phase - 1]
                while at < end and data[at] in part:
                    at += 1
                if at == end:
                    return None
                if at == start:
                    return False  # a part missing, or run into other bytes
                phase, start = phase + 1, at
            version = bytes(data[start:start + len(_VERSION)]).upper()
            if not _VERSION.startswith(version):
                return False
            return True if len(version) == len(_VERSION) else None
        finally:
            self._at, self._phase, self._start = at, phase, start


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
