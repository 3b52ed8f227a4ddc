"""Relaying a tunnel's bytes both ways: between two plain sockets a direction copies until a
transfer fills its buffer, then moves to ``splice(2)`` through a pipe (the bytes no longer
enter Python); between other streams, a copy through trio's stream API.

Each direction is a task: the one to the upstream is the caller's, the other a child in a
nursery whose scope carries the idle deadline. When a direction reaches end of file it
half-closes the other side (``shutdown(SHUT_WR)``) and ends; the tunnel ends when both have,
when either side breaks, or when no byte moved for ``idle_timeout`` seconds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Final, final

import trio

_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_NONBLOCK", 0) | getattr(os, "SPLICE_F_MOVE", 0)
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux), missing from older Pythons
# Pipes start at the kernel's default (64 KiB) and grow to _BULK_PIPE once a direction fills
# one: pipe buffers count against the user's pipe quota (fs.pipe-user-pages-soft), so idle and
# interactive tunnels keep small pipes and only bulk transfers pay for big ones.
_BULK_PIPE: Final = 1 << 20
#: Bytes a direction may move without waiting before it yields to the other tasks.
_YIELD_EVERY: Final = 1 << 22
_COPY_SIZE: Final = 1 << 16
# Errors that mean the peer went away: the tunnel just ends.
_GONE: Final = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT,
                          errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNABORTED})


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
) -> tuple[int, int]:
    """Move bytes between ``client`` and ``upstream`` until both directions end, either side
    breaks, or the tunnel is idle for ``idle_timeout`` seconds. Returns ``(bytes to upstream,
    bytes to client)``. Peer errors end the tunnel quietly; they are not raised.

    The direction to the upstream runs in the calling task and the other in one child task;
    the nursery's own cancel scope carries the idle deadline (a task and a scope fewer per
    tunnel, which shows on short requests)."""
    sockets = plain_sockets(client, upstream) if zero_copy else None
    counter: Counter | None = None
    try:
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            scope.deadline = trio.current_time() + idle_timeout
            counter = Counter(scope, idle_timeout)
            if sockets is not None:
                a, b = sockets
                nursery.start_soon(_socket_one_way, b, a, counter, False, scope)
                await _socket_one_way(a, b, counter, True, scope)
            else:
                nursery.start_soon(_copy_one_way, upstream, client, counter, False, scope)
                await _copy_one_way(client, upstream, counter, True, scope)
    finally:
        totals = (0, 0) if counter is None else (counter.to_upstream, counter.to_client)
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


async def _socket_one_way(
    source: trio.socket.SocketType,
    sink: trio.socket.SocketType,
    counter: Counter,
    upstream: bool,
    tunnel: trio.CancelScope,
) -> None:
    """One direction between two sockets. It starts as a plain copy (read, write: for a short
    exchange that is cheaper than making a pipe and splicing twice) and moves to ``splice(2)``
    through a pipe once a read fills the copy buffer (a bulk transfer; sockets that cannot
    splice keep copying). After a read that filled its buffer the next one is tried at once:
    while a transfer keeps the socket readable the loop goes round without a pass through
    trio's event loop (yielding once per ``_YIELD_EVERY`` bytes moved that way, so that it
    never starves the other tasks). After a shorter read, which emptied the socket, it waits
    for readiness first."""
    pipe: tuple[int, int] | None = None
    can_splice = True
    try:
        chunk, grown, unyielded, drained = _COPY_SIZE, False, 0, True
        src, dst = source.fileno(), sink.fileno()
        while True:
            if drained:
                await trio.lowlevel.wait_readable(src)
                unyielded = 0
            data = b""
            try:
                if pipe is None:
                    data = os.read(src, _COPY_SIZE)
                    n = len(data)
                else:
                    n = os.splice(src, pipe[1], chunk, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                drained = True
                continue
            except OSError as exc:
                if pipe is None or exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                # This socket type cannot splice: go on copying through userspace.
                _close_pipe(pipe)
                pipe, can_splice, chunk, drained = None, False, _COPY_SIZE, False
                continue
            if n == 0:
                break
            drained = n < chunk
            if pipe is None:
                await _write_all(dst, data)
                if not drained and can_splice:
                    pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            else:
                if not drained and not grown:
                    grown = True
                    try:
                        chunk = fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, _BULK_PIPE)
                    except OSError:
                        pass  # over the user's pipe quota: keep the pipe we have
                await _splice_out(pipe[0], dst, n)
            counter.moved(n, upstream=upstream)
            unyielded += n
            if unyielded >= _YIELD_EVERY:
                await trio.lowlevel.checkpoint()
                unyielded = 0
        sink.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno not in _GONE:
            raise
        tunnel.cancel()
    finally:
        if pipe is not None:
            _close_pipe(pipe)


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


async def _splice_out(read_end: int, fd: int, pending: int) -> None:
    while pending:
        try:
            pending -= os.splice(read_end, fd, pending, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)


def _close_pipe(pipe: tuple[int, int]) -> None:
    os.close(pipe[0])
    os.close(pipe[1])
