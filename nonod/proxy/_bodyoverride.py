"""A ``_method`` field in a request body, seen as the body streams through:
:class:`BodyOverrideWatch`.

Upstreams take the method to run from the body of a request too: Rails' ``Rack::MethodOverride``
(in every Rails application's middleware) reads ``_method`` from a form body (a POST with
``application/x-www-form-urlencoded``, ``multipart/form-data``, or no content type), Symfony
and Laravel from the parsed request (Laravel's is the JSON body for a JSON request), Express's
``method-override`` from ``req.body`` when told so. On a route with endpoint rules that field
would have the upstream run a method no rule allows, with the real key.

The watch is fed each piece of the body before it is passed on and says when the piece holds
the end of such a field; the proxy then drops the upstream connection before that piece is
sent (every such parser reads the whole body before it acts, and never gets it). Recognised,
in any letter case, each character also as ``%XX`` or ``\\u00XX``, and ``.method`` for
``_method`` after any spaces (``+``, ``%20``): PHP, under Symfony and Laravel, drops a name's
leading spaces and makes its ``.`` ``_``, so ``.method=DELETE`` is ``$_POST['_method']``:

- a form pair's name: ``_method=`` at the start of the body or after ``&`` or ``;``, also
  as a list or a key (``_method[]=``, ``_method[0]=``: qs, Express's parser, makes it a list
  whose first item method-override takes);
- a JSON key: ``"_method"`` and a ``:`` (white space between them, however much);
- a multipart part's name: ``name="_method"``, ``name='_method'`` or ``name=_method``
  followed by ``;``, a quote or white space.

The watch does not parse: such text inside a JSON string (``"x&_method=y"``) is refused too,
but a ``"_method"`` that is a value, or ``'_method'`` in a code snippet, is not.
Only bodies such parsers read are watched (:func:`parsed_for_fields`): no content type, a form,
or JSON; an upload of another type (``application/octet-stream``, ``image/png``) is not.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from typing import Final, final
from urllib.parse import unquote_to_bytes


def _char(c: str) -> str:
    """One character of the field name: itself, or its ``%XX`` or ``\\u00XX`` escape."""
    code = f"{ord(c):02x}"
    return f"(?:{re.escape(c)}|%{code}|\\\\u00{code})"


#: ``_method``, or ``.method``: PHP (under Symfony and Laravel) files a field's name with its
#: leading spaces dropped and every ``.`` and space made ``_`` (``php_register_variable_ex``).
_NAME: Final = (f"(?:{_char(' ')}|\\+)*(?:{_char('_')}|{_char('.')})"
                + "".join(_char(c) for c in "method"))
#: Every spelling; each match ends at the byte that completes it (a form pair's ``=``, the
#: closing quote, the delimiter after an unquoted name).
#: A NUL right after the name ends it too: PHP takes a name's ``strlen``, so
#: ``_method%00x=DELETE`` is ``$_POST['_method']`` (JSON keys are not cut so).
_FIELD: Final = re.compile(  # searched in lower case, white space runs as one space
    (f"[&;]{_NAME}(?:=|\\[|%5b|%00|\\x00)|\"{_NAME}\" ?:"
     f"|name ?= ?[\"']?{_NAME}[; \"'\\[\\x00]").encode())
#: What every spelling holds once its escapes are decoded.
_MARKS: Final = (b"_method", b".method")
_U_ESCAPE: Final = re.compile(rb"\\u00([0-9a-f]{2})")


def _marked(window: bytes) -> bool:
    return any(mark in window for mark in _MARKS)


def _unescaped(window: bytes) -> bytes:
    """``window`` (in lower case) with its ``%XX`` and ``\\u00XX`` escapes decoded: the
    cheap test of whether it can hold a field at all (random bytes hold ``%`` often)."""
    if b"\\u00" in window:
        window = _U_ESCAPE.sub(lambda m: bytes.fromhex(m[1].decode()), window)
    return unquote_to_bytes(window)
#: Bytes kept from the pieces before: more than the longest match (a field split across
#: pieces is found when its last byte comes), its white space runs squeezed to one space.
_KEEP: Final = 160
#: How much of a piece with no field in it is squeezed for the bytes kept (a run of white
#: space longer than this, where a field has begun without ``_method`` yet, could hide it).
_SQUEEZED: Final = 4096


def _squeezed(data: bytes) -> bytes:
    """``data`` with each run of white space as one space."""
    inner = b" ".join(data.split())
    head = b" " if data[:1].isspace() else b""
    tail = b" " if data[-1:].isspace() and inner else b""
    return head + inner + tail


#: Where a media type ends for the parsers that pick a body's parser: Rack splits at ``;``
#: or ``,``, PHP at those or a space.
_MEDIA_END: Final = re.compile(rb"[;,\s]")


def parsed_for_fields(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request body of these headers' type is one a framework takes fields from:
    none given (Rack reads a POST without one), a form (``application/x-www-form-urlencoded``,
    ``multipart/...``) or JSON (``application/json``, ``...+json``), read as the most lenient
    of them reads it (``multipart/form-data,boundary=x`` is a form to Rack); several
    ``Content-Type`` headers count as such a body too."""
    types = [value for name, value in headers if name.lower() == b"content-type"]
    if len(types) != 1:
        return True
    media = _MEDIA_END.split(types[0].strip().lower(), maxsplit=1)[0]
    return (not media or media.startswith((b"application/x-www-form-urlencoded", b"multipart/"))
            or b"json" in media)


def deflate_coded(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a body of these headers is in the ``deflate`` coding (read two ways:
    :class:`DecodedBodyWatch`)."""
    return any(token.strip().lower() == b"deflate" for name, value in headers
               if name.lower() == b"content-encoding" for token in value.split(b","))


@final
class BodyOverrideWatch:
    """Fed a request body piece by piece (:meth:`feed`), then :meth:`end`; True from the
    piece that completes a ``_method`` field (see the module doc)."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b"&"  # the start of the body begins a form pair

    def feed(self, data: bytes) -> bool:
        """Whether ``data`` (the next piece) completes a ``_method`` field."""
        # A form's space (``+``, ``%20``) as a space: PHP drops the leading ones of a name, so
        # a run of them, however long, must not push the ``&`` before it out of the tail.
        window = (self._tail + data).lower().replace(b"%20", b" ").replace(b"+", b" ")
        if not _marked(window) and (
                (b"%" not in window and b"\\u00" not in window)
                or not _marked(_unescaped(window))):
            # Every spelling is ``_method`` or ``.method`` once its escapes are decoded.
            kept = window.rstrip()
            self._tail = _squeezed(kept[-_SQUEEZED:])[-_KEEP:] + (
                b" " if len(kept) < len(window) else b"")
            return False
        window = _squeezed(window)
        self._tail = window[-_KEEP:]
        return _FIELD.search(window) is not None

    def end(self) -> bool:
        """Whether the body's end completes one (an unquoted multipart name last)."""
        return self.feed(b";")


#: How many decoded bytes one step of a compressed body's decoding makes at most.
_INFLATE_STEP: Final = 1 << 16
#: How many compressed bytes one step is given at most (what a step leaves is copied).
_INPUT_STEP: Final = 1 << 14
#: How many gzip members a body may have (each costs a new inflater whatever it decodes to:
#: 20 bytes of an empty one cost what some 2 KiB of a body's bytes cost to watch).
_MEMBERS: Final = 1024


class UnreadableBody(Exception):
    """A compressed body the watch cannot read: it does not decode (``too_large`` False) or
    it expands past the watch's limit (True)."""

    def __init__(self, *, too_large: bool) -> None:
        super().__init__("expands past the limit" if too_large else "does not decode")
        self.too_large = too_large


@final
class _Reading:
    """One way of decoding the body: its inflater, its watch, what it may still decode."""

    __slots__ = ("inflater", "left", "members", "raw", "watch", "wbits")

    def __init__(self, wbits: int, limit: int) -> None:
        self.wbits = wbits
        self.raw = wbits < 0
        self.inflater = zlib.decompressobj(wbits)
        self.watch = BodyOverrideWatch()
        self.left = limit
        self.members = 1


@final
class DecodedBodyWatch:
    """:class:`BodyOverrideWatch` over a ``gzip`` or ``deflate`` body's decoded bytes, for an
    upstream that decodes a request body before its framework reads the fields (ASP.NET
    Core's request decompression, Apache's ``DEFLATE`` input filter, Express's body-parser):
    decoded in bounded steps, every member of a multi-member body (at most ``_MEMBERS``), at
    most ``limit`` bytes in all. Raises UnreadableBody for a body that does not decode or
    expands past ``limit``.

    A ``deflate`` body (``deflate=True``) is read two ways, each watched: in zlib's format
    (RFC 1950; Express's body-parser) and raw (RFC 1951; ASP.NET Core's ``DeflateStream``,
    which reads nothing after the last block). A zlib header read raw is a stored block, so
    one body can be both and decode to other bytes each way. A reading that fails to decode
    is dropped (an upstream reading so fails too); the body is refused when none is left, or
    when none reached its end."""

    __slots__ = ("_readings",)

    def __init__(self, limit: int, *, deflate: bool = False) -> None:
        self._readings = [_Reading(zlib.MAX_WBITS | 32, limit)]  # gzip or zlib headers
        if deflate:
            self._readings.append(_Reading(-zlib.MAX_WBITS, limit))

    def feed(self, data: bytes) -> bool:
        """Whether ``data`` (the next compressed piece) completes a ``_method`` field."""
        return any(self.steps(data))

    def steps(self, data: bytes) -> Iterator[bool]:
        """:meth:`feed` a bounded step of work at a time (some ``_INFLATE_STEP`` bytes decoded
        or read): whether it completed a field. The caller may let other work run between
        steps (a small piece can expand a thousandfold)."""
        for reading in list(self._readings):
            try:
                yield from self._decoded(reading, data)
            except zlib.error:
                self._readings.remove(reading)
                if not self._readings:
                    raise UnreadableBody(too_large=False) from None

    def _decoded(self, reading: _Reading, data: bytes) -> Iterator[bool]:
        view = memoryview(data)
        at = 0
        work = 0
        while True:
            inflater = reading.inflater
            if inflater.eof:
                if reading.raw or at >= len(view):
                    return  # a raw stream's reader reads nothing after its last block
                reading.members += 1  # another member follows (gzip's concatenation)
                if reading.members > _MEMBERS:
                    raise UnreadableBody(too_large=False)
                reading.inflater = inflater = zlib.decompressobj(reading.wbits)
            given = view[at:at + _INPUT_STEP]
            out = inflater.decompress(given, _INFLATE_STEP)
            at += len(given) - len(inflater.unused_data if inflater.eof
                                   else inflater.unconsumed_tail)
            if self._seen(reading, out):
                yield True
                return
            work += len(out) + len(given)
            if work >= _INFLATE_STEP:
                work = 0
                yield False
            # A full step may leave decoded bytes inside the inflater with its input used up.
            if at >= len(view) and (inflater.eof or len(out) < _INFLATE_STEP):
                return

    def end(self) -> bool:
        """Whether the body's end completes one; a body no reading read to its end (cut
        short) does not decode."""
        if any(reading.watch.end() for reading in self._readings):
            return True
        if not any(reading.inflater.eof for reading in self._readings):
            raise UnreadableBody(too_large=False)
        return False

    @staticmethod
    def _seen(reading: _Reading, out: bytes) -> bool:
        reading.left -= len(out)
        if reading.left < 0:
            raise UnreadableBody(too_large=True)
        return bool(out) and reading.watch.feed(out)
