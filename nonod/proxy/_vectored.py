"""Sending several buffers as one write: ``sendmsg(2)`` with the buffers as they are.

h11 frames a chunk of a streamed body as three pieces (size line, the data, ``\\r\\n``);
joining them would copy the data (a MiB at a time on a large download) only to write it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    views = [memoryview(piece).cast("B") for piece in pieces if len(piece)]
    try:
        while views:
            sent = await stream.socket.sendmsg(views)
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views.pop(0))
                else:
                    views[0] = views[0][sent:]
                    sent = 0
    except OSError as exc:
        if stream.socket.fileno() < 0:
            raise trio.ClosedResourceError("the connection is closed") from exc
        raise trio.BrokenResourceError(str(exc)) from exc
