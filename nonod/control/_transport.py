"""The byte stream under the WebSocket: a Unix socket read with ``recvmsg`` so that the
descriptors a client passes (``SCM_RIGHTS``, a launch's stdio) are kept, and the check that
passed descriptors may be a session's stdio."""

from __future__ import annotations

import array
import contextlib
import errno
import os
import socket
import stat
from typing import Final, final

import trio

from .. import protocol as p
from ._errors import BadDescriptors
from ._limits import OverBudget, ReceiveBudget

#: The longest header of a masked client frame (RFC 6455 5.2).
_FRAME_HEADER: Final = 14

_ANCILLARY_SPACE: Final = socket.CMSG_SPACE(p.PASSED_FDS * array.array("i").itemsize)


@final
class UnixConnection(trio.abc.HalfCloseableStream):
    """A Unix stream socket read with ``recvmsg``, keeping descriptors the peer attaches.

    Reading with plain ``recv`` would make the kernel discard (close) passed descriptors, so
    every read goes through ``recvmsg`` and any ``SCM_RIGHTS`` descriptors land in an inbox of
    at most ``PASSED_FDS``. More than that (or a truncated control message) breaks the
    connection: a well-behaved client never sends more than one launch's worth at a time.

    With a ``budget`` (the system daemon), every read is charged to the peer's ``uid`` until
    the conversation says the bytes became a request (:meth:`consumed`) or the connection
    closes; a read that finds no room breaks the connection (``_limits.ReceiveBudget``).
    """

    def __init__(self, sock: trio.socket.SocketType, *, budget: ReceiveBudget | None = None,
                 uid: int = -1) -> None:
        self.socket = sock
        self._stream = trio.SocketStream(sock)
        self._inbox: list[int] = []
        self._receiving = False
        self.peer_gone = trio.Event()
        self._budget = budget
        self._uid = uid
        self._unread = 0  # bytes read and charged, not yet consumed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already reading this connection")
        self._receiving = True
        try:
            if self._budget is not None:
                try:
                    await self._budget.wait_for_room(self._uid)
                except OverBudget as exc:
                    self.peer_gone.set()
                    raise trio.BrokenResourceError(str(exc)) from exc
            try:
                data, ancdata, flags, _ = await self.socket.recvmsg(
                    max_bytes or 65536, _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
                )
            except OSError as exc:
                self.peer_gone.set()
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("connection was closed") from exc
                raise trio.BrokenResourceError(f"connection broke: {exc}") from exc
            if self._budget is not None:
                self._unread += len(data)
                self._budget.charge(self._uid, len(data))
        finally:
            self._receiving = False
        fds = _collect_fds(ancdata)
        if fds:
            self._inbox.extend(fds)
            if flags & socket.MSG_CTRUNC or len(self._inbox) > p.PASSED_FDS:
                self.discard_fds()
                self.peer_gone.set()
                raise trio.BrokenResourceError("peer sent more file descriptors than allowed")
        elif flags & socket.MSG_CTRUNC:
            self.peer_gone.set()
            raise trio.BrokenResourceError("peer sent an oversized control message")
        if not data:
            self.peer_gone.set()
        return data

    def took(self, message: str | bytes) -> None:
        """The conversation took ``message``: its bytes (and its longest frame header) were
        read from this connection and are a request now."""
        if self._budget is not None:
            size = len(message) if isinstance(message, bytes) else len(
                message.encode("utf-8", "surrogatepass"))
            self.consumed(_FRAME_HEADER + size)

    def consumed(self, count: int) -> None:
        """``count`` bytes read from this connection became a request (or were framing):
        they no longer count against the peer's budget."""
        if self._budget is not None:
            count = min(count, self._unread)
            self._unread -= count
            self._budget.release(self._uid, count)

    def take_fds(self, count: int) -> tuple[int, ...] | None:
        """The ``count`` oldest passed descriptors (now the caller's to close), or None."""
        if len(self._inbox) < count:
            return None
        taken, self._inbox = tuple(self._inbox[:count]), self._inbox[count:]
        return taken

    def discard_fds(self) -> None:
        for fd in self._inbox:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._inbox.clear()

    async def aclose(self) -> None:
        self.discard_fds()
        self.consumed(self._unread)
        await self._stream.aclose()


def _collect_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % array.array("i").itemsize
            fds.extend(array.array("i", data[:usable]))
    return fds


def check_stdio_fds(fds: tuple[int, ...]) -> None:
    """Refuse descriptors a session must not get as its stdio.

    Terminals and other character devices, pipes, sockets and regular files are accepted.
    Directories are refused: a directory from the host's mount namespace would let the program
    walk around the masks of its own (``openat`` relative to it). So are anonymous inodes
    (pidfds, eventfds...), which are not stdio and could reach outside the session.
    """
    names = ("stdin", "stdout", "stderr")
    for index, fd in enumerate(fds):
        mode = os.fstat(fd).st_mode
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK):
            continue
        if kind == stat.S_IFREG:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            if target.startswith("/"):
                continue
        what = "a directory" if kind == stat.S_IFDIR else "not a terminal, pipe, socket or file"
        raise BadDescriptors(
            f"the {names[index] if index < 3 else 'extra'} descriptor passed is {what}",
            hint="only terminals, pipes, sockets and regular files can be a session's stdio",
        )
