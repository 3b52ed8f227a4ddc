"""Replacing a reflected secret with the phantom token, in headers and in streamed bodies.

An upstream can send a credential back: an echo endpoint, an error page that quotes the
request, a ``Location`` with the key in its query. The proxy passes every response header
value through :meth:`Scrubber.replace_all` and every body through a :class:`Scrubber` fed chunk
by chunk, so the program sees its phantom token where the real value was.

Across chunks, the scrubber holds back a tail that could still become a match, chosen
without looking at the secret: the trailing run of visible bytes (``!`` to ``~``, 0x80 to
0xFF, and a space or control byte only if a needle holds it), at most :attr:`Scrubber.reach`
bytes (a power of two less one, at least 255, and at least the longest needle's length less
one: it tells little of the secret's length). Holding back only a tail that *is* the beginning
of a needle made the timing and framing of a streamed body an oracle: a program whose
upstream reflects its bytes learnt, guess by guess, which characters begin the real secret
(docs/security-model.md, "The scrubber's held-back tail, an oracle for the credential"). A
stream whose chunks end in a line break or a space (an SSE event ends in ``\\n\\n``) is
passed on at once, so scrubbing adds no latency to streaming there. The output of any split
of a body equals the output of the whole body (tested over every split position).

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

- percent-encoding as each common URL encoder writes it: which characters it keeps besides
  letters and digits differs (RFC 3986's unreserved, also ``/`` for Python's ``quote``,
  ``!*'()`` for JavaScript, ``*`` but not ``~`` for Java and Ruby forms...), each with ``%XX``
  in upper- or lower-case hex, and ``%20`` or ``+`` for a space (:data:`_PERCENT_KEPT`);
- HTML escaping as common escapers write it (``&amp;``, ``&lt;``, ``&gt;``, the quotes as
  ``&quot;``, ``&#34;``, ``&#39;``, ``&#x27;``, ``&#039;`` or ``&apos;``, and Handlebars'
  ``&#x3D;``, ``&#x60;``, ``&#x2F;``);
- percent-encoding of every byte (``%41%42...``), upper- and lower-case hex;
- hex of the bytes (``4142...``), lower- and upper-case;
- JSON escapes: ``\\uXXXX`` for every character (lower- and upper-case hex), and the secret
  as JSON encoders write it inside a string (``\\"``, ``\\\\``, ``\\/`` or ``/``, non-ASCII
  characters as ``\\uXXXX`` or as they are) when that differs from the secret, and as Go's
  and Rails' encoders write it (``<``, ``>``, ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026``);
- base64, standard and URL-safe: the secret encoded alone (padded and not), and what the
  secret alone decides of a larger blob it lies in at any of the three byte alignments (the
  one or two characters at each end that mix its bits with its neighbours' are left as
  they are: at most 8 bits of the secret, and the rest of such a blob may decode as
  garbage after the replacement, whose length differs);
- each of these forms that holds a ``/`` also with ``\\/`` for it, as PHP's ``json_encode``
  writes it in a JSON string (a base64 blob, a URL).

A secret made only of letters, digits and ``-_.`` has a single spelling in all of these (the
secret itself), so the extra spellings cost nothing for it.

Not recognised: a secret inside a larger base64 blob broken into lines within it, a mix of cases or
of escaped and unescaped characters within one occurrence that no encoder above writes, other
encodings (base32, numeric entities for every character, UTF-16, double encoding), and a
compressed body (the proxy asks upstreams for ``identity``
and decodes gzip/deflate itself; any other coding is refused).
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, final, overload

from ._phantom import PhantomToken
from ._secret import Secret

#: Below this many bytes, encoded forms of a secret are too likely to occur by chance.
_MIN_ENCODED: Final = 8
#: How many first bytes needles must share to be searched for together.
_GROUP_HEAD: Final = 12
#: The shortest needle for which a buffer is first narrowed by its sampled bytes (shorter:
#: the sample would be most of the buffer, and every needle is searched in all of it).
_SAMPLED_MIN: Final = 8
#: The fewest bytes a stream's held-back tail may reach (Scrubber.reach).
_MIN_REACH: Final = 256
#: The bytes a held-back tail is made of whatever the secret: the visible ASCII characters,
#: which every API key, and every encoded form of one, is written in, and the bytes of UTF-8's
#: other characters (0x80-0xFF: a passphrase's ``é`` must not be the only high byte that
#: waits). A secret's space or control character waits as well, and only with that secret.
_VISIBLE: Final = frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100))


def scrub_replacements(secret: Secret, token: PhantomToken, parts: Iterable[bytes] = ()
                       ) -> dict[bytes, bytes]:
    """The needle -> replacement table for one secret and the session's phantom token.

    ``parts``: what an upstream reads out of the injected value that is secret too
    (:func:`nonod.credentials.injected_parts`: a ``Basic`` value's password), each with the
    same forms, also replaced by the phantom token; one under ``_MIN_ENCODED`` bytes is not
    looked for (it would be replaced wherever those few bytes occur in every response; the
    whole secret still is)."""
    real = secret.reveal().encode("utf-8")
    fake = token.reveal().encode("ascii")
    table = {real: fake}
    plain = {real}
    if len(real) >= _MIN_ENCODED:
        _add_forms(table, real, fake)
    for part in parts:
        if len(part) >= _MIN_ENCODED and part not in table:
            table[part] = fake
            plain.add(part)
            _add_forms(table, part, fake)
    for needle, replacement in list(table.items()):
        if b"/" in needle and needle not in plain:  # PHP's json_encode writes `/` as `\/`
            table.setdefault(needle.replace(b"/", b"\\/"), replacement.replace(b"/", b"\\/"))
    return table


def _add_forms(table: dict[bytes, bytes], real: bytes, fake: bytes) -> None:
    """The encoded forms of ``real`` (each replaced by the same form of ``fake``) not in
    ``table`` yet; those that read text are left out for bytes that are not UTF-8."""
    for encode in _ENCODINGS:
        try:
            table.setdefault(encode(real), encode(fake))
        except UnicodeDecodeError:
            continue
    for b64 in (base64.b64encode, base64.urlsafe_b64encode):
        padded_real, padded_fake = b64(real), b64(fake)
        table.setdefault(padded_real, padded_fake)
        table.setdefault(padded_real.rstrip(b"="), padded_fake.rstrip(b"="))
        for shift in (0, 1, 2):
            table.setdefault(_b64_inside(b64, real, shift), _b64_inside(b64, fake, shift))


def _b64_inside(encode: Callable[[bytes], bytes], data: bytes, shift: int) -> bytes:
    """The base64 characters that ``data`` alone decides when it lies inside a larger
    encoded blob, ``shift`` bytes (mod 3) after a 3-byte boundary: each character carries 6
    bits, so the first ones may hold bits of what comes before, and the last one bits of
    what follows; those are left out. (Whoever places the secret in a blob chooses the
    shift: an upstream that base64-encodes a dump of the request puts the program's own
    headers before it.)"""
    encoded = encode(bytes(shift) + data)
    return encoded[-(-8 * shift // 6):8 * (shift + len(data)) // 6]


#: The characters percent-encoders leave as they are beyond letters and digits, one set per
#: common spelling: RFC 3986's unreserved (Python's ``quote(safe="")``, ``rawurlencode``,
#: ``Uri.EscapeDataString``, curl), the same with ``/`` (Python's default ``quote``),
#: JavaScript's ``encodeURIComponent`` and ``encodeURI``, Java's ``URLEncoder`` and Ruby's
#: ``encode_www_form_component``, PHP's ``urlencode``, .NET's ``HttpUtility.UrlEncode``, and
#: Go's ``url.PathEscape``. Each is also tried with ``+`` for a space and with lower-case hex
#: (.NET's ``HttpUtility`` writes ``%2f``).
_PERCENT_KEPT: Final = ("-_.~", "-_.~/", "-_.!~*'()", "-_.!~*'();/?:@&=+$,#", "-_.*", "-_.",
                        "-_.!*()", "-_.~$&+:=@")
_ALNUM: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _percent(data: bytes, kept: str, *, plus: bool, lower: bool) -> bytes:
    """``data`` percent-encoded by an encoder that keeps letters, digits and ``kept`` (and
    writes ``+`` for a space when ``plus``), with upper- or lower-case hex. (Not
    :func:`urllib.parse.quote`: it always keeps ``~``, which Java's and PHP's encoders do
    not.)"""
    keep = _ALNUM | frozenset(kept.encode("ascii"))
    form = b"%%%02x" if lower else b"%%%02X"
    return b"".join(bytes([byte]) if byte in keep else b"+" if plus and byte == 0x20
                    else form % byte for byte in data)


#: HTML escaping as common escapers write it (``&``, ``<`` and ``>`` always): Python's
#: ``html.escape``, markupsafe (Jinja) and Go's ``html/template``, PHP's ``htmlspecialchars``,
#: Rails' ``html_escape``, XML's ``&apos;``, Handlebars and OWASP's encoder (also ``=``,
#: `````` and ``/``), and text-node escapers that leave quotes alone.
_HTML_ESCAPES: Final[tuple[dict[str, str], ...]] = tuple(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", **extra} for extra in (
        {'"': "&quot;", "'": "&#x27;"}, {'"': "&#34;", "'": "&#39;"},
        {'"': "&quot;", "'": "&#039;"}, {'"': "&quot;", "'": "&#39;"},
        {'"': "&quot;", "'": "&apos;"}, {'"': "&quot;"}, {},
        {'"': "&quot;", "'": "&#x27;", "=": "&#x3D;", "`": "&#x60;", "/": "&#x2F;"},
    ))


def _html(data: bytes, escapes: Mapping[str, str]) -> bytes:
    return "".join(escapes.get(c, c) for c in data.decode("utf-8")).encode("utf-8")


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


def _json_html_safe(data: bytes) -> bytes:
    """The secret inside a JSON string as Go's ``encoding/json`` and Rails' ``to_json`` write
    it by default: also ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026``."""
    text = _json_string(data, ascii_only=False, slash=False).decode("utf-8")
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .encode("utf-8"))


#: The encoded forms of a secret that are replaced by the same form of the phantom token.
_ENCODINGS: Final[tuple[Callable[[bytes], bytes], ...]] = (
    *(functools.partial(_percent, kept=k, plus=p, lower=lo)
      for k in _PERCENT_KEPT for p in (False, True) for lo in (False, True)),
    *(functools.partial(_html, escapes=e) for e in _HTML_ESCAPES),
    _percent_all, _percent_all_lower, _hex, _hex_upper,
    _json_u, _json_u_upper,
    *(functools.partial(_json_string, ascii_only=a, slash=s)
      for a in (True, False) for s in (True, False)),
    _json_html_safe,
)


def _groups(needles: list[bytes]) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    """``needles`` (longest first) in groups searched for together, each with its head, the
    first bytes all its members share. A secret's spellings share what comes before the
    first character an encoder changes; a needle joins a group when that is at least
    _GROUP_HEAD bytes (``bytes.find`` of a short head would be slower than one find per
    needle: it skips less far). A needle alone is its own head."""
    groups: list[tuple[bytes, list[bytes]]] = []
    for needle in needles:
        for index, (head, members) in enumerate(groups):
            shared = _shared(head, needle)
            if shared >= _GROUP_HEAD:
                groups[index] = (head[:shared], members)
                members.append(needle)  # longest first: needles come in that order
                break
        else:
            groups.append((needle, [needle]))
    return tuple((head, tuple(members)) for head, members in groups)


def _shared(a: bytes, b: bytes) -> int:
    """How many first bytes ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _find_group(buffer: bytes | bytearray, head: bytes, members: tuple[bytes, ...],
                pos: int, end: int) -> tuple[int, bytes | None]:
    """The first place in ``buffer[pos:end]`` where one of ``members`` (which all begin with
    ``head``; longest first) lies whole, and the longest one there; ``(-1, None)``: none."""
    at = buffer.find(head, pos, end)
    while at != -1:
        for needle in members:
            if buffer.startswith(needle, at, end):
                return at, needle
        at = buffer.find(head, at + 1, end)
    return -1, None


def _uncached(pattern: bytes) -> re.Pattern[bytes]:
    """``re.compile`` without ``re``'s module cache, which would keep a pattern of the real
    secret (the last 512 patterns any code compiled) long after its session ended. The
    compiler's own entry point is not public API: where it is missing, ``re.compile``."""
    compiler = getattr(re, "_compiler", None)  # CPython 3.11 and later
    compile_ = getattr(compiler, "compile", None)
    if compile_ is None:
        return re.compile(pattern)
    compiled: re.Pattern[bytes] = compile_(pattern, 0)
    return compiled


@final
class Scrubber:
    """A streaming replacer for a fixed set of needles (leftmost match, longest first).

    ``feed(chunk)`` returns what can be passed on now; ``flush()`` returns the rest at the end
    of the stream. ``replace_all(data)`` is the one-shot form (headers, WebSocket messages) and
    does not touch the stream's state.
    """

    __slots__ = ("_groups", "_held", "_marks", "_needles", "_pattern", "_reach", "_runs",
                 "_step", "_table")

    def __init__(self, replacements: Mapping[bytes, bytes]) -> None:
        if not replacements or any(not needle for needle in replacements):
            raise ValueError("a Scrubber needs non-empty needles")
        self._table = dict(replacements)
        self._needles = sorted(self._table, key=len, reverse=True)
        self._pattern = _uncached(b"|".join(re.escape(n) for n in self._needles))
        self._step = len(self._needles[-1])
        in_needles = {byte for needle in self._needles for byte in needle}
        # What is held back at the end of a piece must not depend on the secret (it would
        # be an oracle for it): any trailing run of these bytes, up to _reach of them. Every
        # needle is made of them and is at most _reach + 1 bytes long, so every tail that
        # could still become a match is held back, and more.
        self._runs = bytes(byte in in_needles or byte in _VISIBLE for byte in range(256))
        self._reach = max(_MIN_REACH, 1 << (len(self._needles[0]) - 1).bit_length()) - 1
        self._marks = (bytes(byte in in_needles for byte in range(256))
                       if self._step >= _SAMPLED_MIN else None)
        self._groups = _groups(self._needles)
        self._held = b""

    def fresh(self) -> Scrubber:
        """A scrubber for another stream with the same needles (the compiled pattern is
        shared, the held-back bytes are not)."""
        other = Scrubber.__new__(Scrubber)
        other._table = self._table
        other._needles = self._needles
        other._pattern = self._pattern
        other._runs = self._runs
        other._reach = self._reach
        other._step = self._step
        other._marks = self._marks
        other._groups = self._groups
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
        ``data`` itself (``end == len(data)``) or a memoryview of its first ``end`` bytes;
        when only a tail is held back, a memoryview of what comes before it."""
        out = self._feed(data, end, view=True)
        return memoryview(data)[:end] if out is data and end < len(data) else out

    @overload
    def _feed(self, data: bytes | bytearray, end: int) -> bytes | bytearray: ...
    @overload
    def _feed(self, data: bytes | bytearray, end: int, *, view: bool
              ) -> bytes | bytearray | memoryview: ...

    def _feed(self, data: bytes | bytearray, end: int, *, view: bool = False
              ) -> bytes | bytearray | memoryview:
        """:meth:`feed` of ``data[:end]``; when nothing is replaced or held back, ``data``
        itself (the caller knows where the piece ends). ``view``: when nothing is replaced
        but a tail is held back, a memoryview of what comes before it, not a copy (a piece
        of text mostly ends inside a word, whose end is held back)."""
        if self._held:
            # One copy (a piece that ends inside a word leaves its end held back).
            buffer: bytes | bytearray = self._held + memoryview(data)[:end]
            end = len(buffer)
        else:
            buffer = data
        out: list[bytes | bytearray] = []
        pos = 0
        found: dict[bytes, tuple[int, bytes | None]] = {}
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
            if pos == 0 and view:
                return memoryview(buffer)[:hold]  # nothing replaced: no copy either
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

    def _search(self, buffer: bytes | bytearray, pos: int, end: int,
                found: dict[bytes, tuple[int, bytes | None]]) -> tuple[int, bytes | None]:
        """The leftmost needle in ``buffer[pos:end]`` (the longest one where several start
        together), as the pattern would find it. One ``bytes.find`` per group of needles that
        share their first bytes (the head): a body is mostly free of needles, and ``find``
        skips through it far faster than the pattern's alternation, which tries every needle
        at every position. Needles starting at one place share their head, so they are in one
        group, tried longest first. ``found`` keeps, per group, where its next match in
        ``buffer`` is (-1: none): a group is searched again only once a replacement has moved
        ``pos`` past it, so each group scans a buffer about once however many reflections it
        holds."""
        best, match = end, None
        for head, members in self._groups:
            start, needle = found.get(head, (-2, None))
            if -1 < start < pos or start == -2:
                start, needle = found[head] = _find_group(buffer, head, members, pos, end)
            if 0 <= start < best:
                best, match = start, needle
        return best, match

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self.replace_all(held)

    def _replace(self, match: re.Match[bytes]) -> bytes:
        return self._table[match.group()]

    @property
    def reach(self) -> int:
        """The most bytes a stream's held-back tail holds."""
        return self._reach

    def _hold_from(self, buffer: bytes | bytearray, pos: int, end: int) -> int:
        """Where the held-back tail of ``buffer[:end]`` begins (at or after ``pos``; ``end``:
        nothing is held back): the trailing run of visible bytes, at most ``reach`` of them.
        Every place where a needle could begin but does not fit yet lies in that run.

        Not only those places: which bytes wait for the next piece must not tell whether they
        begin the secret. Held back only when they did, a program whose upstream reflects
        its bytes could tell, by when (and in which chunk) its guess came back, whether the
        guess was the beginning of the real secret, one character after the other."""
        start = max(pos, end - self._reach)
        marks = buffer[start:end].translate(self._runs)
        return start + marks.rfind(0) + 1
