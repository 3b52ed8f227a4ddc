"""A plain CONNECT request head read without h11: the common case of a fresh tunnel, parsed
by one regular expression instead of h11's state machine.

It is a shortcut, never a second parser with rules of its own: :func:`parse_connect` takes
only a head that h11 would take too (one ``CONNECT`` request line of ``HTTP/1.1``, complete in
the bytes at hand, within the size limit, header fields of visible ASCII, exactly one
``Host``, none of the fields that change framing or the connection: ``Content-Length``,
``Transfer-Encoding``, ``Connection``, ``Upgrade``, ``Expect``) and returns the same request
target and headers (names lower-cased, values without surrounding whitespace). Anything else
returns None and goes to h11, which accepts or refuses it as it always has. A refusal of a
request read here is answered through an h11 connection fed the very same bytes
(:meth:`ConnectHead.h11`), so the answer is h11's.
"""

from __future__ import annotations

import re
from typing import Final, final

import h11

# h11's grammar (h11/_abnf.py), narrowed: field values of visible ASCII only (h11 also takes
# obs-text), CRLF line ends only, no obsolete line folding.
_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_VALUE: Final = rb"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*"
# The blanks after a colon are taken possessively (``*+``): a value never begins with one, so
# this matches the same heads, and a head that does not match is not tried again at every
# split of a run of blanks (time quadratic in the run: 5 s for 60,000, in the pump thread).
_HEAD: Final = re.compile(
    rb"CONNECT ([\x21-\x7e]+) HTTP/1\.1\r\n((?:" + _TOKEN + rb":[ \t]*+(?:" + _VALUE
    + rb")?[ \t]*\r\n)*)\r\n")
_FIELD: Final = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+(" + _VALUE + rb")?[ \t]*\r\n")
#: Fields after which h11 may frame, refuse or answer differently: left to h11.
_H11_ONLY: Final = frozenset({b"content-length", b"transfer-encoding", b"connection",
                              b"upgrade", b"expect"})
#: What h11 sends for our ``200`` to a CONNECT (``Response(status_code=200, headers=[],
#: reason=b"Connection established")``).
ESTABLISHED: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"


@final
class ConnectHead:
    """A CONNECT head read by :func:`parse_connect`, and what came after it."""

    __slots__ = ("_data", "_max_head_bytes", "headers", "target", "trailing")

    def __init__(self, data: bytes, end: int, target: bytes,
                 headers: list[tuple[bytes, bytes]], max_head_bytes: int) -> None:
        self._data = data
        self._max_head_bytes = max_head_bytes
        self.target = target
        self.headers = headers
        self.trailing = data[end:]

    def h11(self) -> h11.Connection:
        """An h11 server connection in the state the usual path would have it in after
        reading this request: to answer it (refusals) exactly as that path does."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_bytes)
        conn.receive_data(self._data)
        event = conn.next_event()
        if not isinstance(event, h11.Request):  # parse_connect takes only what h11 takes
            raise h11.RemoteProtocolError("expected a request")
        return conn


def parse_connect(data: bytes, max_head_bytes: int) -> ConnectHead | None:
    """The CONNECT head at the start of ``data`` if it is a plain one (see the module
    docstring), else None: then h11 reads ``data``."""
    if not data.startswith(b"CONNECT "):
        return None
    match = _HEAD.match(data, 0, max_head_bytes)
    if match is None:
        return None
    headers = [(name.lower(), value or b"")
               for name, value in _FIELD.findall(match.group(2))]
    hosts = 0
    for name, _ in headers:
        if name in _H11_ONLY:
            return None
        hosts += name == b"host"
    if hosts != 1:
        return None
    return ConnectHead(data, match.end(), match.group(1), headers, max_head_bytes)
