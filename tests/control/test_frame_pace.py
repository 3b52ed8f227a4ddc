"""``FramePace``: the client's frames found in the bytes as they are read, however the reads
split them, and only small frames that are not a whole message charged."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nonod.control._transport import SMALL_FRAME, SMALL_FRAMES_BURST, FramePace, TooManyFrames

HEAD = b"GET /nonod HTTP/1.1\r\nHost: x\r\n\r\n"


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode]) + length + os.urandom(4) + payload


def feed(stream: bytes, cuts: list[int], now: float = 0.0) -> None:
    pace = FramePace()
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        pace.feed(stream[start:cut], now)
        start = cut


def test_whole_messages_and_large_fragments_are_not_charged() -> None:
    messages = b"".join(frame(0x1, b"{}") for _ in range(10 * SMALL_FRAMES_BURST))
    big = b"".join(frame(0x1 if i == 0 else 0x0, b"x" * SMALL_FRAME, fin=i == 99)
                   for i in range(100))
    feed(HEAD + messages + big + frame(0x2, b"y" * 70_000), [])


@pytest.mark.parametrize("small", [
    frame(0x0, b"a", fin=False), frame(0x0, b"", fin=False), frame(0xA, b""),
    frame(0x9, b"ping")])
def test_small_frames_past_the_burst_break_the_connection(small: bytes) -> None:
    pace = FramePace()
    pace.feed(HEAD + frame(0x1, b"a", fin=False), 0.0)
    with pytest.raises(TooManyFrames):
        pace.feed(small * SMALL_FRAMES_BURST, 0.0)
    again = FramePace()  # at the refill rate, they go on
    again.feed(HEAD, 0.0)
    for second in range(3 * SMALL_FRAMES_BURST):
        again.feed(small, float(second))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2_000), max_size=40))
def test_any_split_of_the_reads_finds_the_same_frames(cuts: list[int]) -> None:
    """A burst of small frames after the head is refused wherever the reads cut it; the
    same bytes less one frame are not."""
    smalls = [frame(0xA, b"") for _ in range(SMALL_FRAMES_BURST)]
    fine = HEAD + frame(0x1, b"z" * 300) + b"".join(smalls)
    feed(fine, cuts)
    with pytest.raises(TooManyFrames):
        feed(fine + frame(0x9, b""), cuts)


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\n", b"\n\r\n"],
                         ids=["bare-lf", "crlf-lf", "lf-crlf"])
def test_a_head_ended_as_h11_ends_it_is_followed(end: bytes) -> None:
    # h11 (under wsproto's handshake) ends a head at \n\r?\n, not only at \r\n\r\n: a head
    # ended with bare line feeds left the pace reading the frames as head, never charged
    # (review13). Cut at every byte of the head's end too.
    head = b"GET /nonod HTTP/1.1\nHost: x" + end
    smalls = frame(0x0, b"", fin=False) * (SMALL_FRAMES_BURST + 1)
    for cut in range(len(head) - 4, len(head) + 1):
        with pytest.raises(TooManyFrames):
            feed(head + frame(0x1, b"a", fin=False) + smalls, [cut])
