"""h11's header lines, read in time linear in their length (nonod.proxy._h11_lines), and the
CONNECT head of the pump thread's fresh path (nonod.proxy._connect_head) the same."""

from __future__ import annotations

import re
import time

import h11
import h11._abnf as abnf
import h11._readers as readers
from hypothesis import given
from hypothesis import strategies as st

from nonod.proxy._connect_head import parse_connect
from nonod.proxy._h11_lines import LINEAR, make_linear

ORIGINAL = re.compile(abnf.header_field.encode("ascii"))
#: One header line of blanks after its colon, then a byte no value may hold.
BAD_LINE = b"x:" + b" " * 60_000 + b"\x00"


def seconds_to_read(head: bytes) -> float:
    """This thread's CPU seconds to read ``head`` (wall time would hold the host's load)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 17)
    conn.receive_data(head)
    started = time.thread_time()
    try:
        conn.next_event()
    except h11.RemoteProtocolError:
        pass
    return time.thread_time() - started


def test_h11_in_this_process_reads_header_lines_with_the_linear_expression() -> None:
    assert make_linear()  # this h11's pattern is the one it was written against
    assert readers.header_field_re is LINEAR


def test_a_line_of_blanks_that_does_not_match_is_refused_at_once() -> None:
    # Before: 10 to 18 s on this machine (the daemon's thread held all along).
    for head in (b"GET / HTTP/1.1\r\nHost: a\r\n" + BAD_LINE + b"\r\n\r\n",
                 b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n" + BAD_LINE + b"\r\n\r\n"):
        assert seconds_to_read(head) < 1.0
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 17)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    conn.receive_data(b"HTTP/1.1 200 OK\r\n" + BAD_LINE + b"\r\n\r\n")  # an upstream's
    started = time.thread_time()
    try:
        conn.next_event()
    except h11.RemoteProtocolError:
        pass
    assert time.thread_time() - started < 1.0


def test_the_fresh_paths_connect_head_is_read_at_once_too() -> None:
    # Before: 5 s, in the pump thread that relays every tunnel of the daemon.
    for head in (b"CONNECT a:443 HTTP/1.1\r\n" + BAD_LINE,
                 b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nx:" + b"\t " * 30_000):
        started = time.thread_time()
        assert parse_connect(head, 1 << 17) is None
        assert time.thread_time() - started < 1.0


LINE_BYTES = st.lists(st.sampled_from([b" ", b"\t", b"a", b"-", b":", b"\x00", b"\x80",
                                        b"\r", b"\xff", b"Z"]), max_size=12).map(b"".join)


@given(name=st.sampled_from([b"x", b"Host", b"a-b", b"", b"x y"]), rest=LINE_BYTES)
def test_the_linear_expression_matches_what_h11s_own_matches(name: bytes, rest: bytes
                                                              ) -> None:
    line = name + b":" + rest
    before, after = ORIGINAL.fullmatch(line), LINEAR.fullmatch(line)
    assert (before is None) == (after is None)
    if before is not None and after is not None:
        assert before.groupdict() == after.groupdict()


@given(rest=LINE_BYTES)
def test_the_connect_head_reads_the_fields_h11_reads(rest: bytes) -> None:
    head = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nx:" + rest + b"\r\n\r\n"
    parsed = parse_connect(head, 1 << 16)
    if parsed is None:
        return  # h11's path reads it (a shortcut may always decline)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    request = conn.next_event()
    assert isinstance(request, h11.Request)
    assert parsed.headers == [(n, v) for n, v in request.headers]


def test_every_reader_of_untrusted_heads_brings_the_linear_reader_with_it() -> None:
    """Each in a fresh interpreter: importing what reads program (or local users') heads is
    enough, whatever was imported before: the proxy, the metrics endpoint, the control
    socket's handshake, a webhook's and a log sink's answers."""
    import subprocess
    import sys

    for module in ("nonod.proxy._server", "nonod.proxy._reverse", "nonod._metrics_server",
                   "nonod.control._server", "nonod.approvals._webhook",
                   "nonod.shipping._http"):
        check = (f"import {module}, h11._readers as r; "
                 "from nonod.proxy._h11_lines import LINEAR; "
                 "raise SystemExit(r.header_field_re is not LINEAR)")
        assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0, module
