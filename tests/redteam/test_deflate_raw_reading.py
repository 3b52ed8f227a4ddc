"""A ``deflate`` request body read two ways (review26).

The watch for a ``_method`` field in a compressed request body (``_bodyoverride.py``) read
``Content-Encoding: deflate`` as zlib's format (RFC 1950) only. ASP.NET Core's request
decompression, which the watch names as an upstream it guards, reads ``deflate`` with .NET's
``DeflateStream``: raw deflate (RFC 1951), no zlib header or check, and nothing after the last
block read. A zlib header (``78 01``) is, read raw, a stored block: one body can be a zlib
stream whose decoded bytes are harmless (the watch passed it) and a raw stream that decodes to
``&_method=DELETE`` (the upstream ran it). A real proxy and a real TLS upstream that inflates
``deflate`` raw, as ``DeflateStream`` does, then takes ``_method``.
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Awaitable, Callable

import pytest
import trio

from nonod.proxy._bodyoverride import DecodedBodyWatch, UnreadableBody
from tests.credentials.conftest import (
    Pki,
    Responder,
    RouteProxy,
    UpstreamRequest,
    github_route,
    start_tls_upstream,
)
from tests.credentials.conftest import pki as pki  # the fixtures
from tests.credentials.conftest import start_route_proxy as start_route_proxy

REAL = "ghp_RealGitHubSecret0123456789abcdefXYZ"
StartProxy = Callable[..., Awaitable[RouteProxy]]
TARGET = "/github/repos/o/r/issues/1/comments"


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED)
    return compressor.compress(data) + compressor.flush()


def polyglot(hidden: bytes) -> bytes:
    """A zlib stream of 65534 harmless bytes that, read as raw deflate, is ``\\x01`` and then
    ``hidden``: the zlib header read raw is a stored block of one byte (its length's low byte
    is the header's FLG), and the zlib stream's first stored block holds, as plain bytes to
    the zlib reader, an empty stored block and a fixed Huffman block of ``hidden`` read raw."""
    block = raw_deflate(hidden)
    assert b"method" not in block
    size = 0xFFFE
    content = b"\x00\x00\xff\xff" + block
    content += b"a" * (size - len(content))
    return (b"\x78\x01" + b"\x00" + struct.pack("<HH", size, size ^ 0xFFFF) + content
            + b"\x03\x00" + struct.pack(">I", zlib.adler32(content)))


def test_the_polyglot_reads_two_ways() -> None:
    body = polyglot(b"&_method=DELETE")
    assert b"_method" not in zlib.decompress(body)
    assert zlib.decompressobj(-15).decompress(body) == b"\x01&_method=DELETE"


async def inflates_raw_then_overrides(request: UpstreamRequest, respond: Responder) -> None:
    """ASP.NET Core's ``deflate`` (``DeflateStream``: raw, what follows the last block not
    read), then a form's ``_method`` taken."""
    body = request.body
    if request.header(b"content-encoding") == b"deflate":
        inflater = zlib.decompressobj(-15)
        try:
            body = inflater.decompress(body)
        except zlib.error:
            await respond.whole(400, b"does not decode")
            return
    fields = dict(pair.partition(b"=")[::2] for pair in body.split(b"&"))
    await respond.whole(200, (fields.get(b"_method") or request.method).upper())


async def post(proxy: RouteProxy, body: bytes, coding: str) -> tuple[int, str]:
    client = await proxy.client()
    response = await client.request(
        "POST", TARGET, [("Authorization", f"Bearer {proxy.token.reveal()}"),
                         ("Content-Type", "application/x-www-form-urlencoded"),
                         ("Content-Encoding", coding)], body=body)
    await client.aclose()
    reason = json.loads(response.body)["reason"] if response.status >= 400 else (
        response.body.decode())
    return response.status, reason


async def test_a_deflate_body_is_watched_read_raw_too(
        nursery: trio.Nursery, pki: Pki, start_route_proxy: StartProxy) -> None:
    port, seen = await start_tls_upstream(nursery, pki.server, inflates_raw_then_overrides)
    route = github_route(endpoint_rules=(("POST", "/repos/*/*/issues/*/comments"),))
    proxy = await start_route_proxy([(route, REAL)], pins={"api.github.com": f"127.0.0.1:{port}"})
    # Before: (200, "DELETE"), the upstream running a method no rule allows.
    assert await post(proxy, polyglot(b"&_method=DELETE"), "deflate") == (403, "method_override")
    assert await post(proxy, raw_deflate(b"a=1&_method=DELETE"), "deflate") == (
        403, "method_override")
    assert seen.requests == []
    # A raw deflate body without the field goes on (before: 400, as not zlib's format).
    plain = raw_deflate(b"a=1&b=2")
    assert await post(proxy, plain, "deflate") == (200, "POST")
    assert seen.requests[-1].body == plain


def test_gzip_members_that_decode_to_nothing_are_bounded() -> None:
    """Empty gzip members (20 bytes each, no output) cost a new inflater and a copy of the
    rest of the piece each: a piece of them cost time growing with its square, and nothing
    counted against the decoded limit."""
    empty = gzip.compress(b"", mtime=0)
    watch = DecodedBodyWatch(1 << 20, deflate=True)
    with pytest.raises(UnreadableBody):
        watch.feed(empty * 4096)
    few = DecodedBodyWatch(1 << 20, deflate=True)
    assert not few.feed(empty * 8 + gzip.compress(b"a=1", mtime=0))
    assert not few.end()


def test_output_held_inside_the_inflater_is_watched_with_its_piece() -> None:
    """A step that fills its output with the piece's input used up can leave decoded bytes
    inside the inflater (the rest of a match): the field they complete was found only with
    the next piece, after the piece that completes it had gone upstream, and a raw stream
    may have no next piece."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = compressor.compress(b"a=x_method=DELETEDELETEDELETE" + b"b" * 65499
                               + b"&_method=DELETEDELETEDELETE&" + b"c" * 5000)
    body += compressor.flush()
    cuts = [cut for cut in range(1, len(body))
            if b"&_method=" in zlib.decompressobj(-15).decompress(body[:cut])]
    assert cuts
    for cut in cuts:
        assert DecodedBodyWatch(1 << 20, deflate=True).feed(body[:cut]), cut
