"""Relaying a tunnel's bytes both ways: between two plain sockets, by the pump thread
(:mod:`._pump`: outside the event loop, ``splice(2)`` once a direction goes bulk); between
other streams, a copy through trio's stream API.

In the copy, each direction is a task: the one to the upstream is the caller's, the other a
child in a nursery whose scope carries the idle deadline. When a direction reaches end of
file it half-closes the other side and ends; the tunnel ends when both have, when either side
breaks, or when no byte moved for ``idle_timeout`` seconds.
"""

from __future__ import annotations

import os
from typing import Final, final

import trio

from .._cancelled import raise_one_cancelled
from ._pump import Moved, pump

_COPY_SIZE: Final = 1 << 16


@final
class Counter:
    """Bytes moved in each direction, and the idle deadline they push forward."""

    def __init__(self, scope: trio.CancelScope, idle_timeout: float) -> None:
        self._scope = scope
        self._idle = idle_timeout
        self.to_upstream = 0
        self.to_client = 0

    def moved(self, n: int, *, upstream: bool) -> None:
        if upstream:
            self.to_upstream += n
        else:
            self.to_client += n
        self._scope.deadline = trio.current_time() + self._idle


def plain_sockets(
    a: trio.abc.Stream, b: trio.abc.Stream
) -> tuple[trio.socket.SocketType, trio.socket.SocketType] | None:
    """The sockets under ``a`` and ``b`` if both are plain socket streams and this system has
    splice(2), else None."""
    if (hasattr(os, "splice") and isinstance(a, trio.SocketStream)
            and isinstance(b, trio.SocketStream)):
        return a.socket, b.socket
    return None


async def relay(
    client: trio.abc.Stream,
    upstream: trio.abc.Stream,
    *,
    idle_timeout: float,
    zero_copy: bool = True,
    moved: Moved | None = None,
) -> tuple[int, int]:
    """Move bytes between ``client`` and ``upstream`` until both directions end, either side
    breaks, or the tunnel is idle for ``idle_timeout`` seconds. Returns ``(bytes to upstream,
    bytes to client)``, also left in ``moved``, where they are too when the relay is
    cancelled or fails. Peer errors end the tunnel quietly; they are not raised.

    Between plain sockets (``zero_copy``) the pump thread relays and the idle timeout runs on
    the real clock; otherwise the direction to the upstream runs in the calling task and the
    other in one child task, and the nursery's own cancel scope carries the idle deadline."""
    sockets = plain_sockets(client, upstream) if zero_copy else None
    if sockets is not None:
        return await pump(*sockets, idle_timeout=idle_timeout, moved=moved)
    counter: Counter | None = None
    try:
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            scope.deadline = trio.current_time() + idle_timeout
            counter = Counter(scope, idle_timeout)
            nursery.start_soon(_copy_one_way, upstream, client, counter, False, scope)
            await _copy_one_way(client, upstream, counter, True, scope)
    except BaseExceptionGroup as group:
        # Cancelled in both directions (the session ended): raised as one Cancelled, as the
        # pump's path raises it (see :func:`one_cancelled`).
        raise_one_cancelled(group)
        raise
    finally:
        totals = (0, 0) if counter is None else (counter.to_upstream, counter.to_client)
        if moved is not None:
            moved.to_upstream, moved.to_client = totals
    return totals


async def _copy_one_way(
    source: trio.abc.Stream,
    sink: trio.abc.Stream,
    counter: Counter,
    upstream: bool,
    tunnel: trio.CancelScope,
) -> None:
    try:
        while True:
            data = await source.receive_some(_COPY_SIZE)
            if not data:
                break
            await sink.send_all(data)
            counter.moved(len(data), upstream=upstream)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()
        else:
            tunnel.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        tunnel.cancel()
