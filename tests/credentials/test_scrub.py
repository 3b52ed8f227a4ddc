"""The streaming scrubber: the output of any split of a body equals the output of the whole."""

from __future__ import annotations

import base64
import binascii
import gc
import json
import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonod.credentials import PhantomToken, Scrubber, Secret, scrub_replacements

SECRET = Secret("ghp_RealSecret/With+Odd=Chars_0123456789")
TOKEN = PhantomToken("f" * 64)


def reference(table: dict[bytes, bytes], data: bytes) -> bytes:
    """What replacing over the whole body gives: leftmost match, longest needle first."""
    needles = sorted(table, key=len, reverse=True)
    pattern = re.compile(b"|".join(re.escape(n) for n in needles))
    return pattern.sub(lambda m: table[m.group()], data)


def stream(scrubber: Scrubber, chunks: list[bytes]) -> bytes:
    return b"".join(scrubber.feed(c) for c in chunks) + scrubber.flush()


def test_the_table_covers_the_secret_and_its_encodings() -> None:
    table = scrub_replacements(SECRET, TOKEN)
    real = SECRET.reveal().encode()
    fake = TOKEN.reveal().encode()
    assert table[real] == fake
    assert table[quote(real, safe="").encode()] == fake
    assert table[base64.b64encode(real)] == base64.b64encode(fake)
    assert table[base64.urlsafe_b64encode(real).rstrip(b"=")] == (
        base64.urlsafe_b64encode(fake).rstrip(b"="))


def test_every_split_position_of_a_reflected_secret() -> None:
    table = scrub_replacements(SECRET, TOKEN)
    real = SECRET.reveal().encode()
    body = (b'{"echo": "Bearer ' + real + b'", "b64": "' + base64.b64encode(real)
            + b'", "url": "https://x/?k=' + quote(real, safe="").encode() + b'"}')
    expected = reference(table, body)
    assert real not in expected
    for cut in range(len(body) + 1):
        assert stream(Scrubber(table), [body[:cut], body[cut:]]) == expected, cut
    for a in range(0, len(body), 7):
        for b in range(a, len(body), 11):
            assert stream(Scrubber(table), [body[:a], body[a:b], body[b:]]) == expected


def _u_escaped(text: str, upper: bool) -> bytes:
    return "".join(("\\u%04X" if upper else "\\u%04x") % ord(c) for c in text).encode()


def encoded_forms(secret: str) -> dict[str, bytes]:
    """Every encoding the scrubber claims to cover, built independently of its code."""
    real = secret.encode()
    return {
        "plain": real,
        "percent": quote(real, safe="").encode(),
        "percent_every_byte": "".join(f"%{b:02X}" for b in real).encode(),
        "percent_every_byte_lower": "".join(f"%{b:02x}" for b in real).encode(),
        "hex": real.hex().encode(),
        "hex_upper": real.hex().upper().encode(),
        "json_u": _u_escaped(secret, upper=False),
        "json_u_upper": _u_escaped(secret, upper=True),
        "json_string": json.dumps(secret)[1:-1].replace("/", "\\/").encode(),
        "json_string_slash_kept": json.dumps(secret)[1:-1].encode(),
        "base64": base64.b64encode(real),
        "base64_url_unpadded": base64.urlsafe_b64encode(real).rstrip(b"="),
        # Each encoder's own spelling: what it keeps, how it writes a space, hex case.
        "percent_python_quote": _percent_keeping(real, "-_.~/"),
        "percent_javascript": _percent_keeping(real, "-_.!~*'()"),
        "percent_java_form": _percent_keeping(real, "-_.*", plus=True),
        "percent_php_urlencode": _percent_keeping(real, "-_.", plus=True),
        "percent_dotnet": _percent_keeping(real, "-_.!*()", plus=True, lower=True),
        "percent_go_path": _percent_keeping(real, "-_.~$&+:=@"),
        "json_go_html_safe": json.dumps(secret, ensure_ascii=False)[1:-1].replace(
            "<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode(),
        "html_python": _html_escaped(secret, {'"': "&quot;", "'": "&#x27;"}),
        "html_go": _html_escaped(secret, {'"': "&#34;", "'": "&#39;"}),
        "html_php": _html_escaped(secret, {'"': "&quot;", "'": "&#039;"}),
        "html_handlebars": _html_escaped(secret, {'"': "&quot;", "'": "&#x27;", "=": "&#x3D;",
                                                  "`": "&#x60;", "/": "&#x2F;"}),
    }


def _percent_keeping(real: bytes, kept: str, *, plus: bool = False, lower: bool = False
                     ) -> bytes:
    hexes = "%{:02x}" if lower else "%{:02X}"
    return "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in kept)
                   else "+" if plus and b == 0x20 else hexes.format(b) for b in real).encode()


def _html_escaped(secret: str, quotes: dict[str, str]) -> bytes:
    escapes = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **quotes}
    return "".join(escapes.get(c, c) for c in secret).encode()


@pytest.mark.parametrize("form", sorted(encoded_forms("x")))
def test_every_covered_encoding_is_replaced_at_every_split(form: str) -> None:
    """Each form of the secret, reflected in a body, comes out as the phantom token's form,
    whatever the split; nothing of the secret (in any covered form) is left."""
    secret = 'ghp_Real/"Secret\\With+Odd=Chars 0123456789~*!<&>\''
    table = scrub_replacements(Secret(secret), TOKEN)
    needle = encoded_forms(secret)[form]
    fake = TOKEN.reveal().encode()
    body = b'{"echo": "' + needle + b'", "again": ' + needle + b"}"
    expected = reference(table, body)
    assert needle not in expected
    if form != "json_string_slash_kept":  # the JSON string form with `/` unescaped: plain
        assert expected.count(table[needle]) == 2
    for other in encoded_forms(secret).values():
        assert other not in expected
    assert fake not in body
    for cut in range(len(body) + 1):
        assert stream(Scrubber(table), [body[:cut], body[cut:]]) == expected, cut
    assert stream(Scrubber(table), [bytes([b]) for b in body]) == expected


def test_a_non_ascii_secret_in_json_u_escapes() -> None:
    """Characters beyond the BMP are escaped as JSON writes them: a surrogate pair."""
    secret = "key-\u00e9\U0001f511-0123456789"
    table = scrub_replacements(Secret(secret), TOKEN)
    escaped = json.dumps(secret).strip('"').encode()  # ensure_ascii: \\u escapes
    assert b"\\ud83d\\udd11" in escaped
    body = b"quoted: " + escaped
    assert escaped not in Scrubber(table).replace_all(body)


def test_ordinary_text_is_passed_on_at_once() -> None:
    """Text ending in a line break or a space is passed on whole: an SSE event is not
    delayed. A trailing run of visible bytes is held back, whether it begins the secret or
    not (what waits must not tell which: tests/redteam/test_scrub_hold_oracle.py)."""
    scrubber = Scrubber(scrub_replacements(SECRET, TOKEN))
    event = b"data: {\"delta\": \"hello\"}\n\n"
    assert scrubber.feed(event) == event
    real = SECRET.reveal().encode()
    assert scrubber.feed(b"x " + real[:5]) == b"x "  # a possible beginning is held...
    assert scrubber.feed(b"! ") == real[:5] + b"! "  # ...and released when it is not one
    wrong = b"ghp_Q"
    assert wrong != real[:5]
    assert Scrubber(scrub_replacements(SECRET, TOKEN)).feed(b"x " + wrong) == b"x "


def test_byte_at_a_time() -> None:
    table = scrub_replacements(SECRET, TOKEN)
    body = b"a" + SECRET.reveal().encode() * 3 + b"z"
    assert stream(Scrubber(table), [bytes([b]) for b in body]) == reference(table, body)


def test_replace_all_and_stream_agree() -> None:
    table = scrub_replacements(SECRET, TOKEN)
    scrubber = Scrubber(table)
    data = b"Location: https://evil/?key=" + SECRET.reveal().encode()
    assert scrubber.replace_all(data) == reference(table, data)
    assert scrubber.feed(b"") == b""


NEEDLE_ALPHABET = b"abc"


@st.composite
def tables(draw: st.DrawFn) -> dict[bytes, bytes]:
    """Small needle sets over a tiny alphabet, so that overlaps and shared prefixes (the
    hard cases) are common."""
    needles = draw(st.lists(st.binary(min_size=1, max_size=6).map(
        lambda b: bytes(NEEDLE_ALPHABET[x % 3] for x in b)), min_size=1, max_size=4,
        unique=True))
    return {n: draw(st.binary(max_size=4)) for n in needles}


@settings(max_examples=400, deadline=None)
@given(tables(), st.binary(max_size=40).map(lambda b: bytes(b"abcx"[x % 4] for x in b)),
       st.data())
def test_any_split_equals_the_whole(table: dict[bytes, bytes], body: bytes,
                                   data: st.DataObject) -> None:
    expected = reference(table, body)
    for cut in range(len(body) + 1):
        assert stream(Scrubber(table), [body[:cut], body[cut:]]) == expected
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert stream(Scrubber(table), pieces) == expected


def test_a_reused_bytearray_is_passed_on_uncopied_and_what_is_held_is_kept() -> None:
    """The proxy reads a large body into one buffer that it refills after each send: the
    scrubber hands an untouched buffer back as it is, and what it holds back (the start of
    a secret at the end of the buffer) is its own copy, not a view of the buffer."""
    real = SECRET.reveal().encode()
    scrubber = Scrubber(scrub_replacements(SECRET, TOKEN))
    buffer = bytearray(b"x" * 99 + b"\n")
    assert scrubber.feed(buffer) is buffer
    buffer[:] = b"y" * 89 + b" " + real[:10]
    out = scrubber.feed(buffer)
    assert out == b"y" * 89 + b" "
    buffer[:] = real[10:] + b"z" * (100 - len(real) + 10)  # the refill completes the secret
    rest = scrubber.feed(buffer) + scrubber.flush()
    assert bytes(out + rest) == (b"y" * 89 + b" " + TOKEN.reveal().encode()
                                 + b"z" * (110 - len(real)))


def stream_through_one_buffer(scrubber: Scrubber, chunks: list[bytes], stale: bytes) -> bytes:
    """Each chunk copied into the start of one reused buffer whose rest holds ``stale``
    bytes (what an earlier, longer read left there), fed with feed_part."""
    size = max((len(c) for c in chunks), default=0) + len(stale)
    buffer = bytearray(size)
    out = b""
    for chunk in chunks:
        buffer[:len(chunk)] = chunk
        buffer[len(chunk):] = (stale * size)[:size - len(chunk)]
        out += bytes(scrubber.feed_part(buffer, len(chunk)))
    return out + scrubber.flush()


def test_a_partly_filled_buffer_is_scrubbed_up_to_its_end_only() -> None:
    """The proxy's worker fills one buffer with whatever arrived: the piece is the buffer's
    first ``end`` bytes, passed on uncopied; bytes after ``end`` (left from an earlier read)
    never complete, hide or make a match."""
    table = scrub_replacements(SECRET, TOKEN)
    real = SECRET.reveal().encode()
    body = b"a" * 30 + real + b"b" * 20 + base64.b64encode(real) + b"c" * 10 + real
    expected = reference(table, body)
    for stale in (real, real[5:], base64.b64encode(real), b"\0"):
        for cut in range(len(body) + 1):
            got = stream_through_one_buffer(Scrubber(table), [body[:cut], body[cut:]], stale)
            assert got == expected, (stale, cut)
    scrubber = Scrubber(table)
    buffer = bytearray(b"plain text\n" + real)  # a secret after the end: not this piece's
    out = scrubber.feed_part(buffer, 11)
    assert isinstance(out, memoryview) and out.obj is buffer and bytes(out) == b"plain text\n"
    assert scrubber.flush() == b""


@settings(max_examples=300, deadline=None)
@given(tables(), st.binary(max_size=40).map(lambda b: bytes(b"abcx"[x % 4] for x in b)),
       st.binary(max_size=8).map(lambda b: bytes(b"abcx"[x % 4] for x in b)), st.data())
def test_any_split_through_one_buffer_equals_the_whole(
        table: dict[bytes, bytes], body: bytes, stale: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert stream_through_one_buffer(Scrubber(table), pieces, stale) == reference(table, body)


def test_a_secret_at_every_offset_in_a_body_of_zeros_is_replaced() -> None:
    """A buffer is first narrowed to where its sampled bytes (one every shortest-needle
    length) could be part of a needle: a secret among bytes that no needle holds is found
    wherever it starts relative to the samples, alone, as the first or the last of two far
    apart, and split across two buffers at any point."""
    table = scrub_replacements(SECRET, TOKEN)
    real = SECRET.reveal().encode()
    forms = [real, base64.b64encode(real), real.hex().encode()]
    step = min(map(len, table))
    for form in forms:
        for offset in range(2 * step + 1):
            body = b"\0" * offset + form + b"\0" * (3 * step) + form + b"\0" * offset
            expected = reference(table, body)
            assert form not in expected and expected.count(table[form]) == 2
            whole = Scrubber(table)  # a form at the very end waits for the flush
            assert bytes(whole.feed(bytearray(body))) + whole.flush() == expected
            cut = len(body) // 2 + offset % 7
            assert stream_through_one_buffer(Scrubber(table), [body[:cut], body[cut:]],
                                             b"\0") == expected, (form, offset)
            alone = b"\0" * offset + form
            assert stream(Scrubber(table), [alone, b"\0" * offset]) == reference(
                table, alone + b"\0" * offset)


@st.composite
def long_tables(draw: st.DrawFn) -> dict[bytes, bytes]:
    """Needles of at least 8 bytes (the buffer is then narrowed by samples first) over a
    tiny alphabet, with shared prefixes and overlaps."""
    free = st.binary(min_size=8, max_size=14).map(
        lambda b: bytes(NEEDLE_ALPHABET[x % 3] for x in b))
    periodic = st.tuples(st.binary(min_size=1, max_size=3), st.integers(8, 14)).map(
        lambda t: (bytes(NEEDLE_ALPHABET[x % 3] for x in t[0]) * 14)[:t[1]])
    needles = draw(st.lists(st.one_of(free, periodic), min_size=1, max_size=3, unique=True))
    return {n: draw(st.binary(max_size=4)) for n in needles}


@settings(max_examples=300, deadline=None)
@given(long_tables(), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), max_size=6),
       st.binary(max_size=60).map(lambda b: bytes(b"abx\0"[x % 4] for x in b)), st.data())
def test_any_split_equals_the_whole_with_long_needles(
        table: dict[bytes, bytes], placed: list[tuple[int, int]], noise: bytes,
        data: st.DataObject) -> None:
    """Needles placed in filler that holds none of their bytes (and in a little that
    does): whatever the split and the buffer's stale bytes, the output is the whole's."""
    needles = sorted(table)
    body = noise
    for gap, which in placed:
        body += b"\0" * gap + needles[which % len(needles)]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    expected = reference(table, body)
    assert stream(Scrubber(table), pieces) == expected
    assert stream_through_one_buffer(Scrubber(table), pieces, b"\0a") == expected


@st.composite
def shared_head_tables(draw: st.DrawFn) -> dict[bytes, bytes]:
    """Needles that share a first stretch of 11 to 18 bytes, as a secret's spellings do
    (from 12 on they are searched for together, by that head), some of them prefixes of
    others, beside a needle of their own."""
    head = bytes(NEEDLE_ALPHABET[x % 2] for x in draw(st.binary(min_size=11, max_size=18)))
    tails = draw(st.lists(st.binary(max_size=5).map(
        lambda b: bytes(NEEDLE_ALPHABET[x % 3] for x in b)), min_size=1, max_size=4,
        unique=True))
    needles = [head + tail for tail in tails] + draw(st.lists(st.just(head[3:]), max_size=1))
    return {n: draw(st.binary(max_size=4)) for n in needles}


@settings(max_examples=300, deadline=None)
@given(shared_head_tables(), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4),
                                                st.integers(0, 30)), max_size=6), st.data())
def test_needles_searched_by_a_shared_head_match_as_the_pattern_does(
        table: dict[bytes, bytes], placed: list[tuple[int, int, int]],
        data: st.DataObject) -> None:
    """Whole needles, needles cut short and filler of their letters, in any order and
    split anywhere: the output is the whole's, leftmost and longest first."""
    needles = sorted(table)
    body = b""
    for gap, which, cut in placed:
        needle = needles[which % len(needles)]
        body += b"ab"[:gap] + needle[:max(len(needle) - cut, 0) if cut > 20 else len(needle)]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    expected = reference(table, body)
    assert stream(Scrubber(table), pieces) == expected
    assert Scrubber(table).replace_all(body) == expected


def b64_decodings(blob: bytes) -> list[bytes]:
    """What a reader can decode of ``blob`` from each of the four character offsets, quad by
    quad (a quad that does not decode gives ``?``)."""
    out = []
    for skip in range(4):
        decoded = b""
        for at in range(skip, len(blob) - 3, 4):
            quad = blob[at:at + 4].replace(b"-", b"+").replace(b"_", b"/")
            try:
                decoded += base64.b64decode(quad.rstrip(b"=") + b"==")
            except binascii.Error:
                decoded += b"?"
        out.append(decoded)
    return out


@pytest.mark.parametrize("secret", ["ghp_RealSecret0123456789abcdefXYZ",  # 33: 0 mod 3
                                    "ghp_RealSecret/0123456789+abcdefXYZ",  # 35: 2 mod 3
                                    "sk-Real_0123456789abcdefABCDEF=xyz"])  # 34: 1 mod 3
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_a_secret_inside_a_base64_blob_is_replaced_at_every_alignment(
        secret: str, encode: Callable[[bytes], bytes]) -> None:
    """An upstream that base64-encodes a dump of the request (or a token that embeds the
    key) puts the secret at the alignment the program chooses with what it sends before;
    whatever that is, and whatever follows, nothing of the secret but its ends can be
    decoded from what is passed on, split anywhere."""
    real = secret.encode()
    table = scrub_replacements(Secret(secret), TOKEN)
    for before in range(6):
        blob = encode(b'{"h": "' + b"x" * before + b"Bearer " + real + b'", "n": 1}')
        assert any(real in d for d in b64_decodings(blob))
        whole = Scrubber(table).replace_all(blob)
        assert not any(real[1:-1] in d for d in b64_decodings(whole)), before
        for cut in range(0, len(blob) + 1, 3):
            assert stream(Scrubber(table), [blob[:cut], blob[cut:]]) == whole


def test_a_base64_blob_with_its_slashes_escaped_as_php_writes_json_is_replaced() -> None:
    """PHP's json_encode writes ``/`` as ``\\/``: a base64 blob that holds the secret, in
    a JSON answer, spells it with those escapes at every alignment."""
    secret = "key?>?>0123456789abcdef?>?>"  # its base64 holds `/` at every alignment
    real = secret.encode()
    table = scrub_replacements(Secret(secret), TOKEN)
    for before in range(3):
        blob = base64.b64encode(b"x" * before + real + b"?>?>tail")
        assert b"/" in blob
        body = b'{"b": "' + blob.replace(b"/", b"\\/") + b'"}'
        out = Scrubber(table).replace_all(body)
        unescaped = out.replace(b"\\/", b"/")
        assert not any(real[1:-1] in d for d in b64_decodings(unescaped)), before
        for cut in range(len(body) + 1):
            assert stream(Scrubber(table), [body[:cut], body[cut:]]) == out


def test_a_dropped_scrubber_leaves_no_pattern_of_its_secret_behind() -> None:
    # The needles are the real secret in every encoding: a compiled pattern of them must go
    # with the scrubber (with its session), not stay in `re`'s module cache, which keeps the
    # last 512 patterns any code compiled for as long as the daemon runs.
    secret = "rt12x" + PhantomToken.new().reveal()[:24]  # a value no earlier test compiled
    scrubber = Scrubber(scrub_replacements(Secret(secret), PhantomToken.new()))
    assert scrubber.fresh().replace_all(b"key " + secret.encode()) != b"key " + secret.encode()
    del scrubber
    gc.collect()
    left = [o for o in gc.get_objects()
            if isinstance(o, re.Pattern) and isinstance(o.pattern, bytes)
            and secret.encode() in o.pattern]
    assert left == []
