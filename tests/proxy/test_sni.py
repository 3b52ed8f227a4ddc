"""The ClientHello's server name, read from real ClientHellos made by Python's ``ssl``."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonod.proxy._sni import (
    NotClientHello,
    RequestLine,
    client_hello_name,
    first_flight,
    request_line,
)


def hello(name: str) -> bytes:
    outgoing = ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing,
                                                   server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_the_name_of_a_whole_client_hello() -> None:
    data = hello("api.example.com")
    assert first_flight(data) and not first_flight(data[:-1])
    assert client_hello_name(data) == "api.example.com"


def test_an_address_sends_no_name() -> None:
    assert client_hello_name(hello("140.82.112.6")) is None


def test_not_tls_is_judged_at_once() -> None:
    assert first_flight(b"SSH-2.0-client\r\n")
    assert not first_flight(b"")


def test_a_client_hello_split_over_two_records_is_refused() -> None:
    data = hello("api.example.com")
    body = data[5:]
    first = data[:3] + (100).to_bytes(2, "big") + body[:100]
    assert first_flight(first)
    with pytest.raises(NotClientHello):
        client_hello_name(first)


def test_an_oversized_record_is_refused() -> None:
    with pytest.raises(NotClientHello):
        first_flight(b"\x16\x03\x01\x40\x01")


def test_two_server_name_extensions_are_refused() -> None:
    data = bytearray(hello("a.example.com"))
    # Append a second server_name extension naming another host, fixing up every length.
    name = b"b.example.net"
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    extension = b"\x00\x00" + (len(entry) + 2).to_bytes(2, "big") + \
        len(entry).to_bytes(2, "big") + entry
    data += extension
    data[3:5] = (int.from_bytes(data[3:5], "big") + len(extension)).to_bytes(2, "big")
    data[6:9] = (int.from_bytes(data[6:9], "big") + len(extension)).to_bytes(3, "big")
    session = data[9 + 34]
    at = 9 + 34 + 1 + session
    at += 2 + int.from_bytes(data[at:at + 2], "big")
    at += 1 + data[at]
    data[at:at + 2] = (int.from_bytes(data[at:at + 2], "big") + len(extension)).to_bytes(
        2, "big")
    with pytest.raises(NotClientHello):
        client_hello_name(bytes(data))


@pytest.mark.parametrize(("data", "verdict"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"get http://other.example/ HTTP/1.0\r\n", True),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True),  # h2c's preface
    (b"GE", None),
    (b"GET /path", None),
    (b"GET /path HT", None),
    (b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", False),
    (b"0032git-upload-pack /project.git\0host=example.com\0", False),
    (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", False),  # PostgreSQL's SSLRequest
    (b"\r\nGET  /\tHTTP/1.1\r\n", True),  # as leniently as servers read it
    (b"GET / http/1.1\r\n", True),
    (b"GET / \r\n", False),
    (b"  GET / HTTP/1.1", False),
])
def test_request_lines_are_told_from_other_protocols(data: bytes, verdict: bool | None
                                                     ) -> None:
    assert request_line(data) is verdict
    assert first_flight(data) is (verdict is not None)


@given(st.binary(max_size=40).map(lambda b: bytes(
    b"\r\n \tGETPOST/x*HTPht1.\x00\x7f"[c % 21] for c in b)), st.data())
def test_the_request_line_read_on_in_pieces_is_judged_as_if_read_at_once(
        data: bytes, draw: st.DataObject) -> None:
    """:class:`RequestLine` given what came so far, read after read, says what a fresh read
    of the same bytes says (it goes on where it stopped instead of reading them again)."""
    line = RequestLine()
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    for cut in [*cuts, len(data)]:
        assert line.judge(data[:cut]) is request_line(data[:cut])
