"""Sending several buffers as one write: ``sendmsg(2)`` / ``writev(2)`` with the buffers as
they are.

h11 frames a chunk of a streamed body as three pieces (size line, the data, ``\\r\\n``);
joining them would copy the data (a MiB at a time on a large download) only to write it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import trio

Piece = bytes | bytearray | memoryview


async def send_pieces(stream: trio.abc.Stream, pieces: Sequence[Piece]) -> None:
    """Write ``pieces`` in order, like ``stream.send_all(b"".join(pieces))`` (with its
    errors: ``BrokenResourceError``, ``ClosedResourceError``), without the join when
    ``stream`` is a plain socket stream."""
    if not isinstance(stream, trio.SocketStream) or len(pieces) == 1:
        await stream.send_all(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return
    if stream.socket.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    views = _views(pieces)
    try:
        while views:
            _advance(views, await stream.socket.sendmsg(views))
    except OSError as exc:
        if stream.socket.fileno() < 0:
            raise trio.ClosedResourceError("the connection is closed") from exc
        raise trio.BrokenResourceError(str(exc)) from exc


def write_pieces(fd: int, pieces: Sequence[Piece], wait_writable: Callable[[float], bool],
                 timeout: float) -> None:
    """For a worker thread: write ``pieces`` in order to the non-blocking socket ``fd``,
    waiting with ``wait_writable(seconds left)`` (False: the time is up) whenever it is full.
    Raises ``TimeoutError`` when the whole write took over ``timeout`` seconds, ``OSError``
    when the socket fails."""
    views = _views(pieces)
    deadline = time.monotonic() + timeout
    while views:
        try:
            _advance(views, os.writev(fd, views))
        except BlockingIOError:
            if not wait_writable(deadline - time.monotonic()):
                raise TimeoutError("the write took longer than its timeout") from None


def _views(pieces: Sequence[Piece]) -> list[memoryview]:
    return [memoryview(piece).cast("B") for piece in pieces if len(piece)]


def _advance(views: list[memoryview], sent: int) -> None:
    """Drop ``sent`` bytes from the front of ``views``."""
    while sent:
        if sent >= len(views[0]):
            sent -= len(views.pop(0))
        else:
            views[0] = views[0][sent:]
            sent = 0
