"""The byte stream under the WebSocket: a Unix socket read with ``recvmsg`` so that the
descriptors a client passes (``SCM_RIGHTS``, a launch's stdio) are kept, the pace of the
small frames a client may send (:class:`FramePace`), and the check that passed descriptors
may be a session's stdio."""

from __future__ import annotations

import array
import contextlib
import errno
import os
import re
import socket
import stat
from typing import Final, final

import trio

from .. import protocol as p
from ._errors import BadDescriptors
from ._limits import OverBudget, ReceiveBudget

#: The longest header of a masked client frame (RFC 6455 5.2).
_FRAME_HEADER: Final = 14
#: Small frames that are not a whole message (a fragment, a ping, a pong) one connection may
#: send at once, and per second after that. Each costs the event loop about as much as a
#: whole request's framing (wsproto's and trio-websocket's work per frame, some 10-20 us);
#: nonod's clients send a message as one frame and a pong per keepalive ping.
SMALL_FRAMES_BURST: Final = 64
SMALL_FRAMES_PER_SECOND: Final = 64.0
#: A frame with at least this much payload is not small: its bytes cost more than its frame.
SMALL_FRAME: Final = 1024
#: The end of the opening handshake's HTTP head, after which frames begin: where h11 (under
#: wsproto's handshake) ends it, a bare line feed's blank line too (before, only \r\n\r\n
#: was looked for, and a head ended with \n\n left every frame after it unpaced).
_HEAD_END: Final = re.compile(b"\n\r?\n")
#: Bytes of a read kept for the next, where the head's end may begin (the longest end, less one).
_HEAD_END_KEPT: Final = 2
_MAX_HEAD: Final = 64 * 1024


class TooManyFrames(Exception):
    """A client sent small frames faster than :data:`SMALL_FRAMES_PER_SECOND`."""


@final
class FramePace:
    """Follows the client's frames through the bytes read (the HTTP head of the handshake
    first), and charges each small frame that is not a whole message against a token bucket.

    A message cut into one-byte fragments (or a stream of empty ones, which never reach
    ``max_message_bytes``), or a flood of pings or pongs, made the daemon's event loop parse
    some 50,000 frames a second per connection: four such connections made another client's
    request take 0.3 s instead of 1 ms. Such a connection is now broken at once.
    """

    def __init__(self) -> None:
        self._in_head = True  # still in the handshake's HTTP head
        self._head = b""  # its last bytes, in case its end is split across reads
        self._header = b""  # a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to come
        self._tokens = float(SMALL_FRAMES_BURST)
        self._at = 0.0

    def feed(self, data: bytes, now: float) -> None:
        """Account for ``data``, the next bytes read; raise :class:`TooManyFrames`."""
        view = memoryview(data)
        if self._in_head:
            seen = self._head + bytes(view[: _MAX_HEAD])
            end = _HEAD_END.search(seen)
            if end is None:
                self._head = seen[-_HEAD_END_KEPT:]
                return  # the handshake's own reader bounds the head
            self._in_head = False
            view = view[end.end() - len(self._head):]
            self._head = b""
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            need = self._header_size(self._header + bytes(view[:14]))
            if need is None or len(self._header) + len(view) < need:
                self._header += bytes(view)
                return
            header = self._header + bytes(view[: need - len(self._header)])
            view = view[need - len(self._header):]
            self._header = b""
            self._frame(header, now)

    @staticmethod
    def _header_size(start: bytes) -> int | None:
        if len(start) < 2:
            return None
        size = start[1] & 0x7F
        extra = 2 if size == 126 else 8 if size == 127 else 0
        return 2 + extra + (4 if start[1] & 0x80 else 0)

    def _frame(self, header: bytes, now: float) -> None:
        size = header[1] & 0x7F
        if size == 126:
            size = int.from_bytes(header[2:4], "big")
        elif size == 127:
            size = int.from_bytes(header[2:10], "big")
        self._skip = size
        whole = header[0] & 0x80 and header[0] & 0x0F in (0x1, 0x2)
        if whole or size >= SMALL_FRAME:
            return
        self._tokens = min(float(SMALL_FRAMES_BURST),
                           self._tokens + (now - self._at) * SMALL_FRAMES_PER_SECOND)
        self._at = now
        if self._tokens < 1:
            raise TooManyFrames(
                f"more than {SMALL_FRAMES_PER_SECOND:.0f} small frames a second that are not "
                "a whole message (fragments, pings, pongs)")
        self._tokens -= 1

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
        self._pace = FramePace()

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
        try:
            self._pace.feed(data, trio.current_time())
        except TooManyFrames as exc:
            self.discard_fds()
            self.peer_gone.set()
            raise trio.BrokenResourceError(str(exc)) from None
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
