"""pump(): a body of known length moved by a reader and a writer task over reused buffers;
pieces in order, a read failure raised after what came before it, a write failure stopping
the reader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from nonod.proxy._bulk import pump


class ReadFailed(Exception):
    pass


class WriteFailed(Exception):
    pass


def source(data: bytes, *, step: int, fail_after: int | None = None
           ) -> tuple[Callable[[memoryview], Awaitable[int]], Callable[[], int]]:
    """A reader of ``data`` that returns at most ``step`` bytes a call (and fails once
    ``fail_after`` bytes were read), and a count of its calls."""
    offset = 0
    calls = 0

    async def read_into(view: memoryview) -> int:
        nonlocal offset, calls
        calls += 1
        if fail_after is not None and offset >= fail_after:
            raise ReadFailed
        await trio.lowlevel.checkpoint()
        n = min(len(view), step, len(data) - offset)
        view[:n] = data[offset:offset + n]
        offset += n
        return n

    return read_into, lambda: calls


async def test_every_byte_arrives_in_order_through_two_small_buffers() -> None:
    data = bytes(range(256)) * 1000
    read_into, _ = source(data, step=7_000)
    out: list[bytes] = []

    async def write(piece: bytes | bytearray) -> None:
        out.append(bytes(piece))  # a copy: the buffer is refilled after this returns
        await trio.lowlevel.checkpoint()

    await pump(len(data), read_into, write, read_errors=(ReadFailed,),
               write_errors=(WriteFailed,), size=10_000)
    assert b"".join(out) == data


async def test_a_read_failure_comes_after_every_piece_read_before_it() -> None:
    data = b"x" * 50_000
    read_into, _ = source(data, step=4_000, fail_after=20_000)
    got = 0

    async def write(piece: bytes | bytearray) -> None:
        nonlocal got
        got += len(piece)

    with pytest.raises(ReadFailed):
        await pump(len(data), read_into, write, read_errors=(ReadFailed,),
                   write_errors=(WriteFailed,), size=8_000)
    assert got == 20_000


async def test_a_write_failure_stops_the_reader() -> None:
    data = b"y" * 1_000_000
    read_into, calls = source(data, step=1_000)

    async def write(piece: bytes | bytearray) -> None:
        raise WriteFailed

    with pytest.raises(WriteFailed):
        await pump(len(data), read_into, write, read_errors=(ReadFailed,),
                   write_errors=(WriteFailed,), size=1_000)
    assert calls() <= 3  # two buffers and the one in hand, not a thousand reads
