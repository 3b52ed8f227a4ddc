"""Moving a large body of known length with two tasks: one reads into a buffer while the
other writes the buffer before, so that neither peer waits for the other.

The buffers are reused (there are ``buffers`` of them, ``size`` bytes each, allocated for
this one body): ``write`` gets a full buffer itself, or a copy of what a shorter read filled,
and must be done with it when it returns (the buffer is refilled after that).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def pump(
    length: int,
    read_into: Callable[[memoryview], Awaitable[int]],
    write: Callable[[bytes | bytearray], Awaitable[None]],
    *,
    read_errors: tuple[type[Exception], ...],
    write_errors: tuple[type[Exception], ...],
    size: int = 1 << 19,
    buffers: int = 2,
) -> None:
    """Move ``length`` bytes: ``read_into(view)`` fills at most ``len(view)`` bytes and
    returns how many (it must raise, not return 0, at a premature end); ``write`` passes a
    piece on, in order. A read error (one of ``read_errors``) is raised only after every
    piece read before it has been written; a write error (one of ``write_errors``) stops the
    reader at once and is raised. Any other exception comes out of the nursery (in an
    exception group)."""
    failures: list[Exception] = []
    full_send, full_receive = trio.open_memory_channel[tuple[bytearray, int]](1)
    empty_send, empty_receive = trio.open_memory_channel[bytearray](buffers)
    for _ in range(buffers if length else 0):
        empty_send.send_nowait(bytearray(min(length, size)))

    async def reader(left: int) -> None:
        async with full_send:
            try:
                while left:
                    buffer = await empty_receive.receive()
                    n = await read_into(memoryview(buffer)[:min(left, len(buffer))])
                    left -= n
                    await full_send.send((buffer, n))
            except read_errors as exc:
                failures.append(exc)  # what was read before still goes out

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, length)
        try:
            async for buffer, n in full_receive:
                await write(buffer if n == len(buffer) else bytes(buffer[:n]))
                empty_send.send_nowait(buffer)
        except write_errors as exc:  # the reader stops at once
            failures.append(exc)
            nursery.cancel_scope.cancel()
    if failures:
        raise failures[0]
