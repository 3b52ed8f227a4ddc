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

The needles are the secret itself, its percent-encoded forms and its base64 forms (standard
and URL-safe, padded and not), each replaced by the same form of the phantom token. A secret
embedded inside a larger base64 blob at another alignment is not recognised; nor is a
compressed body (the proxy asks upstreams for ``identity`` and decodes gzip/deflate itself).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Final, final
from urllib.parse import quote, quote_plus

from ._phantom import PhantomToken
from ._secret import Secret

#: Below this many bytes, encoded forms of a secret are too likely to occur by chance.
_MIN_ENCODED: Final = 8


def scrub_replacements(secret: Secret, token: PhantomToken) -> dict[bytes, bytes]:
    """The needle -> replacement table for one secret and the session's phantom token."""
    real = secret.reveal().encode("utf-8")
    fake = token.reveal().encode("ascii")
    table = {real: fake}
    if len(real) >= _MIN_ENCODED:
        for encode in (_quote, _quote_plus):
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


@final
class Scrubber:
    """A streaming replacer for a fixed set of needles (leftmost match, longest first).

    ``feed(chunk)`` returns what can be passed on now; ``flush()`` returns the rest at the end
    of the stream. ``replace_all(data)`` is the one-shot form (headers, WebSocket messages) and
    does not touch the stream's state.
    """

    __slots__ = ("_firsts", "_held", "_longest", "_needles", "_pattern", "_table")

    def __init__(self, replacements: Mapping[bytes, bytes]) -> None:
        if not replacements or any(not needle for needle in replacements):
            raise ValueError("a Scrubber needs non-empty needles")
        self._table = dict(replacements)
        self._needles = sorted(self._table, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(n) for n in self._needles))
        self._longest = len(self._needles[0])
        self._firsts = frozenset(n[0] for n in self._needles)
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
        other._held = b""
        return other

    def replace_all(self, data: bytes) -> bytes:
        return self._pattern.sub(self._replace, data)

    def feed(self, data: bytes) -> bytes:
        buffer = self._held + bytes(data)
        out: list[bytes] = []
        pos = 0
        while True:
            hold = self._hold_from(buffer, pos)
            start, needle = self._search(buffer, pos)
            if needle is not None and start < hold:
                out.append(buffer[pos:start])
                out.append(self._table[needle])
                pos = start + len(needle)
                continue
            out.append(buffer[pos:hold])
            self._held = buffer[hold:]
            return b"".join(out)

    def _search(self, buffer: bytes, pos: int) -> tuple[int, bytes | None]:
        """The leftmost needle at or after ``pos`` (the longest one where several start
        together), as the pattern would find it. One ``bytes.find`` per needle: a body is
        mostly free of needles, and ``find`` skips through it far faster than the pattern's
        alternation, which tries every needle at every position."""
        best, found = len(buffer), None
        for needle in self._needles:  # longest first: a later one must start strictly earlier
            start = buffer.find(needle, pos, best + len(needle))
            if 0 <= start < best:
                best, found = start, needle
        return best, found

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self.replace_all(held)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        return self._table[match.group()]

    def _hold_from(self, buffer: bytes, pos: int) -> int:
        """The first position at or after ``pos`` where a needle could begin but does not fit
        in ``buffer`` yet (the rest could complete it), or ``len(buffer)``."""
        end = len(buffer)
        for i in range(max(pos, end - self._longest + 1), end):
            if buffer[i] in self._firsts:
                tail = buffer[i:]
                if any(len(n) > len(tail) and n.startswith(tail) for n in self._needles):
                    return i
        return end
