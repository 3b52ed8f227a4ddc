"""Replacing a reflected secret with the phantom token, in headers and in streamed bodies.

An upstream can send a credential back: an echo endpoint, an error page that quotes the
request, a ``Location`` with the key in its query. The proxy passes every response header
value through :meth:`Scrubber.replace_all` and every body through a :class:`Scrubber` fed chunk
by chunk, so the program sees its phantom token where the real value was.

Across chunks, the scrubber holds back the shortest tail that could still become a match: at
most ``len(longest needle) - 1`` bytes, and only when those bytes are the beginning of a needle.
A stream whose chunks end in ordinary text (an SSE event ends in ``\\n\\n``) is passed on at
once, so scrubbing adds no latency to streaming. The output of any split of a body equals
the output of the whole body (tested over every split position).

Within a buffer, one pass first narrows where a needle can be: every needle is at least
``m`` bytes long (the shortest one), so a whole needle in the buffer covers one of the bytes
at positions ``0, m, 2m, ...``, and that byte is one that occurs in some needle. Those
sampled bytes are taken with one strided slice and marked with one ``translate`` (both run
in C over ``n/m`` bytes); only between the samples around the first and the last marked
one is each needle searched for. A buffer none of whose sampled bytes occurs in a needle
(zeros, sparse binary data) is passed on after that one pass; text full of needle bytes is
searched whole, as before.

The needles are the secret itself and these encodings of it, each replaced by the same
encoding of the phantom token:

- percent-encoding as URL encoders write it (unreserved characters kept, ``%XX`` for the
  rest in upper-case hex; ``+`` for a space as forms write it);
- percent-encoding of every byte (``%41%42...``), upper- and lower-case hex;
- hex of the bytes (``4142...``), lower- and upper-case;
- JSON escapes: ``\\uXXXX`` for every character (lower- and upper-case hex), and the secret
  as JSON encoders write it inside a string (``\\"``, ``\\\\``, ``\\/`` or ``/``, non-ASCII
  characters as ``\\uXXXX`` or as they are) when that differs from the secret;
- base64, standard and URL-safe, padded and not, when the secret starts on a 3-byte boundary
  of the encoded data.

Not recognised: a secret inside a larger base64 blob at another alignment, a mix of cases or
of escaped and unescaped characters within one occurrence, other encodings (base32, HTML
entities, double encoding), and a compressed body (the proxy asks upstreams for ``identity``
and decodes gzip/deflate itself; any other coding is refused).
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Final, final, overload
from urllib.parse import quote, quote_plus

from ._phantom import PhantomToken
from ._secret import Secret

#: Below this many bytes, encoded forms of a secret are too likely to occur by chance.
_MIN_ENCODED: Final = 8
#: The shortest needle for which a buffer is first narrowed by its sampled bytes (shorter:
#: the sample would be most of the buffer, and every needle is searched in all of it).
_SAMPLED_MIN: Final = 8


def scrub_replacements(secret: Secret, token: PhantomToken) -> dict[bytes, bytes]:
    """The needle -> replacement table for one secret and the session's phantom token."""
    real = secret.reveal().encode("utf-8")
    fake = token.reveal().encode("ascii")
    table = {real: fake}
    if len(real) >= _MIN_ENCODED:
        for encode in _ENCODINGS:
            table.setdefault(encode(real), encode(fake))
        for b64 in (base64.b64encode, base64.urlsafe_b64encode):
            padded_real, padded_fake = b64(real), b64(fake)
            table.setdefault(padded_real, padded_fake)
            table.setdefault(padded_real.rstrip(b"="), padded_fake.rstrip(b"="))
    return table


def _quote(data: bytes) -> bytes:
    return quote(data, safe="").encode("ascii")


def _quote_plus(data: bytes) -> bytes:
    return quote_plus(data, safe="").encode("ascii")


def _percent_all(data: bytes) -> bytes:
    return b"".join(b"%%%02X" % byte for byte in data)


def _percent_all_lower(data: bytes) -> bytes:
    return b"".join(b"%%%02x" % byte for byte in data)


def _hex(data: bytes) -> bytes:
    return data.hex().encode("ascii")


def _hex_upper(data: bytes) -> bytes:
    return data.hex().upper().encode("ascii")


def _json_u(data: bytes) -> bytes:
    return _u_escapes(data, "\\u%04x")


def _json_u_upper(data: bytes) -> bytes:
    return _u_escapes(data, "\\u%04X")


def _u_escapes(data: bytes, form: str) -> bytes:
    """Every character as ``\\uXXXX`` (characters beyond the BMP as their surrogate pair,
    as JSON writes them)."""
    utf16 = data.decode("utf-8").encode("utf-16-be")
    units = (int.from_bytes(utf16[i:i + 2], "big") for i in range(0, len(utf16), 2))
    return "".join(form % unit for unit in units).encode("ascii")


def _json_string(data: bytes, *, ascii_only: bool, slash: bool) -> bytes:
    """The secret as it appears inside a JSON string: ``\\"`` and ``\\\\`` escaped, non-ASCII
    characters as ``\\uXXXX`` or not (Python's ``ensure_ascii``), ``/`` as ``\\/`` or not
    (PHP's json_encode escapes it). Where nothing needed escaping this is the secret itself."""
    text = json.dumps(data.decode("utf-8"), ensure_ascii=ascii_only)[1:-1]
    return (text.replace("/", "\\/") if slash else text).encode("utf-8")


#: The encoded forms of a secret that are replaced by the same form of the phantom token.
_ENCODINGS: Final[tuple[Callable[[bytes], bytes], ...]] = (
    _quote, _quote_plus, _percent_all, _percent_all_lower, _hex, _hex_upper,
    _json_u, _json_u_upper,
    *(functools.partial(_json_string, ascii_only=a, slash=s)
      for a in (True, False) for s in (True, False)),
)


@final
class Scrubber:
    """A streaming replacer for a fixed set of needles (leftmost match, longest first).

    ``feed(chunk)`` returns what can be passed on now; ``flush()`` returns the rest at the end
    of the stream. ``replace_all(data)`` is the one-shot form (headers, WebSocket messages) and
    does not touch the stream's state.
    """

    __slots__ = ("_firsts", "_held", "_longest", "_marks", "_needles", "_pattern", "_step",
                 "_table")

    def __init__(self, replacements: Mapping[bytes, bytes]) -> None:
        if not replacements or any(not needle for needle in replacements):
            raise ValueError("a Scrubber needs non-empty needles")
        self._table = dict(replacements)
        self._needles = sorted(self._table, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(n) for n in self._needles))
        self._longest = len(self._needles[0])
        self._firsts = re.compile(b"[" + b"".join(
            re.escape(bytes([b])) for b in sorted({n[0] for n in self._needles})) + b"]")
        self._step = len(self._needles[-1])
        in_needles = {byte for needle in self._needles for byte in needle}
        self._marks = (bytes(byte in in_needles for byte in range(256))
                       if self._step >= _SAMPLED_MIN else None)
        self._held = b""

    def fresh(self) -> Scrubber:
        """A scrubber for another stream with the same needles (the compiled pattern is
        shared, the held-back bytes are not)."""
        other = Scrubber.__new__(Scrubber)
        other._table = self._table
        other._needles = self._needles
        other._pattern = self._pattern
        other._longest = self._longest
        other._firsts = self._firsts
        other._step = self._step
        other._marks = self._marks
        other._held = b""
        return other

    def replace_all(self, data: bytes) -> bytes:
        return self._pattern.sub(self._replace, data)

    @overload
    def feed(self, data: bytes) -> bytes: ...
    @overload
    def feed(self, data: bytearray) -> bytes | bytearray: ...

    def feed(self, data: bytes | bytearray) -> bytes | bytearray:
        """What of ``data`` (the next piece of the stream) can be passed on now. When
        nothing is replaced or held back this is ``data`` itself, not a copy: a caller that
        reuses a ``bytearray`` must be done with the result before it refills it."""
        return self._feed(data, len(data))

    def feed_part(self, data: bytes | bytearray, end: int) -> bytes | bytearray | memoryview:
        """:meth:`feed` with ``data[:end]`` as the piece (a reused buffer, filled up to
        ``end``), without copying it: when nothing is replaced or held back the result is
        ``data`` itself (``end == len(data)``) or a memoryview of its first ``end`` bytes."""
        out = self._feed(data, end)
        return memoryview(data)[:end] if out is data and end < len(data) else out

    def _feed(self, data: bytes | bytearray, end: int) -> bytes | bytearray:
        """:meth:`feed` of ``data[:end]``; when nothing is replaced or held back, ``data``
        itself (the caller knows where the piece ends)."""
        if self._held:
            buffer: bytes | bytearray = self._held + data[:end]
            end = len(buffer)
        else:
            buffer = data
        out: list[bytes | bytearray] = []
        pos = 0
        found: dict[bytes, int] = {}
        hold = self._hold_from(buffer, pos, end)
        lo, hi = self._window(buffer, end)
        while True:
            if pos > hold:  # a replacement ran into the held-back tail: look again from it
                hold = self._hold_from(buffer, pos, end)
            start, needle = self._search(buffer, max(pos, lo), hi, found) if lo < hi else (
                end, None)
            if needle is not None and start < hold:
                out.append(buffer[pos:start])
                out.append(self._table[needle])
                pos = start + len(needle)
                continue
            self._held = bytes(buffer[hold:end])
            if pos == 0 and hold == end:
                return buffer  # nothing replaced, nothing held: no copy
            out.append(buffer[pos:hold])
            return b"".join(out)

    def _window(self, buffer: bytes | bytearray, end: int) -> tuple[int, int]:
        """``(lo, hi)`` such that every whole needle in ``buffer[:end]`` lies in
        ``buffer[lo:hi]`` (``lo >= hi``: there is none). A needle is at least ``step`` bytes
        long, so the first sample at or after its start is one of its bytes, as is the last
        sample before its end, and every byte of a needle is marked: it starts after the
        sample before the first marked one and ends before the sample after the last."""
        if self._marks is None:
            return 0, end
        step = self._step
        marks = buffer[:end:step].translate(self._marks)
        first = marks.find(1)
        if first < 0:
            return end, end
        return max(0, (first - 1) * step + 1), min(end, (marks.rfind(1) + 1) * step)

    def _search(self, buffer: bytes | bytearray, pos: int, end: int, found: dict[bytes, int]
                ) -> tuple[int, bytes | None]:
        """The leftmost needle in ``buffer[pos:end]`` (the longest one where several start
        together), as the pattern would find it. One ``bytes.find`` per needle: a body is
        mostly free of needles, and ``find`` skips through it far faster than the pattern's
        alternation, which tries every needle at every position. ``found`` keeps, per needle,
        where its next occurrence in ``buffer`` is (-1: none): a needle is searched again only
        once a replacement has moved ``pos`` past it, so each needle scans a buffer about once
        however many reflections it holds."""
        best, match = end, None
        for needle in self._needles:  # longest first: a later one must start strictly earlier
            start = found.get(needle, -2)
            if -1 < start < pos or start == -2:
                start = found[needle] = buffer.find(needle, pos, end)
            if 0 <= start < best:
                best, match = start, needle
        return best, match

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self.replace_all(held)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        return self._table[match.group()]

    def _hold_from(self, buffer: bytes | bytearray, pos: int, end: int) -> int:
        """The first position at or after ``pos`` where a needle could begin but does not fit
        in ``buffer[:end]`` yet (the rest could complete it), or ``end``. Per needle, only
        the places where its first two bytes occur in the last ``len(needle) - 1`` bytes are
        looked at (and the very last byte for its first byte), with ``bytes.find``: the tail
        of a text body is full of bytes that begin some needle."""
        best = end
        if self._firsts.search(buffer, max(pos, end - self._longest + 1), end) is None:
            return end  # no byte of the tail begins any needle
        for needle in self._needles:
            start = max(pos, end - len(needle) + 1)
            if start >= best:
                continue
            head = needle[:2]
            at = buffer.find(head, start, min(best + 1, end))
            while 0 <= at < best:
                if needle.startswith(buffer[at:end]):
                    best = at
                    break
                at = buffer.find(head, at + 1, min(best + 1, end))
            if start <= end - 1 < best and buffer[end - 1] == needle[0]:
                best = end - 1
        return best
