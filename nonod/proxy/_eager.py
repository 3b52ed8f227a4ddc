"""Socket reads and writes tried at once, before trio's own: no pass through the event loop
when the kernel can answer now.

trio's socket operations always yield to the scheduler, even when the data is already there.
On a proxied request's path a few such passes (the request head, which the client sent right
after connecting; the ``200`` of a CONNECT, which always fits the fresh socket's buffer) are
a measurable part of the added latency. These functions are for single, bounded operations
on that path, never for a loop that could go on without yielding.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


def read_now(stream: trio.abc.Stream, max_bytes: int) -> bytes | None:
    """What has already arrived on ``stream`` (at most ``max_bytes``; ``b""`` at its end), or
    None when nothing has or ``stream`` is not a plain socket stream (then use
    ``receive_some``). A failed socket raises ``trio.BrokenResourceError``."""
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        return os.read(stream.socket.fileno(), max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


def write_now(stream: trio.abc.Stream, data: bytes) -> int:
    """How much of ``data`` a plain socket stream took at once (0 when it would block, or for
    any other stream); send the rest with ``send_all``. A failed socket raises
    ``trio.BrokenResourceError``."""
    if not data or not isinstance(stream, trio.SocketStream):
        return 0
    try:
        return os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


async def close_now(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once, like ``trio.aclose_forcefully``; a plain socket stream
    without the two passes through the event loop that its ``aclose`` and the cancelled
    scope around it cost."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
    else:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def closing_now(stream: trio.abc.Stream) -> AsyncIterator[None]:
    """``async with stream`` that closes with :func:`close_now`."""
    try:
        yield
    finally:
        await close_now(stream)
