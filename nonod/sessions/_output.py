"""A session's terminal output: a bounded ring in memory, a capped log file, live feeds,
and the history ``logs --output`` replays."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Final, final

import structlog
import trio

from ._feed import LaggingFeed

log = structlog.get_logger()

#: Output chunks a subscriber (``logs -f``, ``attach``) may have queued before it is dropped.
SUBSCRIBER_BACKLOG: Final = 512
_READ_CHUNK: Final = 64 * 1024
_GAP: Final = b"\r\n[nonod: output missing here: the log file was capped]\r\n"

@final
class OutputFeed(LaggingFeed[tuple[int, bytes]]):
    """A live feed of a session's output: ``(offset, bytes)`` items, in order. The session
    never waits for it: one that falls behind is closed and ``lagged`` (``_feed``)."""


@final
class SessionOutput:
    """A session's terminal output: a bounded ring in memory, a capped log file, live feeds.

    Bytes are appended to the ring and offered to subscribers synchronously; the log file is
    written by :meth:`run_writer` in a worker thread, in batches, so a slow disk never stalls
    the PTY pump. The writer's backlog is capped at the ring's size, which keeps "file, then
    ring" a gap-free history (see :meth:`history_parts`).
    """

    def __init__(self, *, capacity: int, log_path: Path | None, log_max: int) -> None:
        self.capacity = capacity
        self.log_path = log_path
        self._log_max = log_max
        self._ring = bytearray()
        self.total = 0
        self._subs: list[OutputFeed] = []
        self._pending = bytearray()
        self._logged = 0  # bytes in the file
        self._log_gap = False  # output was dropped from the file
        self._wakeup = trio.Event()
        self._ended = False

    # -- producer side (the PTY pump)
    def feed(self, data: bytes) -> None:
        offset = self.total
        self.total += len(data)
        self._ring += data
        if len(self._ring) > self.capacity:
            del self._ring[: len(self._ring) - self.capacity]
        self._subs = [sub for sub in self._subs if sub.offer((offset, data))]
        if self.log_path is not None and not self._log_gap:
            self._pending += data
            if len(self._pending) > self.capacity:
                self._log_gap = True  # the disk cannot keep up: the ring still has the tail
                self._pending.clear()
            self._wakeup.set()

    def end(self) -> None:
        """No more output: close every feed (their readers see end-of-channel)."""
        self._ended = True
        for sub in self._subs:
            sub.end()
        self._subs.clear()
        self._wakeup.set()

    # -- consumer side
    def subscribe(self, backlog: int = SUBSCRIBER_BACKLOG) -> tuple[bytes, int, OutputFeed]:
        """The ring's content, its starting offset, and a feed of everything after it."""
        sub = OutputFeed(backlog)
        if self._ended:
            sub.end()
        else:
            # Readers that left go now: a quiet session offers them nothing to find out.
            self._subs = [s for s in self._subs if s.open]
            self._subs.append(sub)
        return bytes(self._ring), self.total - len(self._ring), sub

    def history_parts(self) -> tuple[int, bytes, int]:
        """``(bytes of the file that precede the ring, ring, ring start offset)``."""
        start = self.total - len(self._ring)
        in_file = min(start, self._logged)
        return in_file, bytes(self._ring), start

    @property
    def log_gap(self) -> bool:
        return self._log_gap

    async def run_writer(self) -> None:
        """Append pending output to the log file until :meth:`end`, then flush the rest."""
        if self.log_path is None:
            return
        fd = await trio.to_thread.run_sync(_open_log, self.log_path)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await self._flush(fd)
                if self._ended:
                    return
        finally:
            with trio.CancelScope(shield=True):
                await self._flush(fd)
                os.close(fd)

    async def _flush(self, fd: int) -> None:
        if not self._pending:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        room = self._log_max - self._logged
        if room <= 0:
            self._log_gap = True
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self._log_gap = True
        try:
            await trio.to_thread.run_sync(write_all, fd, chunk)
        except OSError as exc:
            log.warning("output log write failed", path=str(self.log_path), error=str(exc))
            self._log_gap = True
            return
        self._logged += len(chunk)


def _open_log(path: Path) -> int:
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_range(path: Path, start: int, end: int) -> bytes:
    if end <= start:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(end - start)
    except FileNotFoundError:
        return b""


def _tail_lines(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    end = len(data)
    # A trailing newline ends the last line; it does not start an empty one.
    cursor = end - 1 if data.endswith(b"\n") else end
    for _ in range(lines):
        cursor = data.rfind(b"\n", 0, cursor)
        if cursor < 0:
            return data
    return data[cursor + 1 :]


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return 0
        raise


async def history(output: SessionOutput | None, path: Path, tail: int | None
                  ) -> AsyncGenerator[tuple[int, bytes], None]:
    """A session's output so far (all of it, or its last ``tail`` lines), as ``(offset,
    bytes)`` chunks: the log file, then the ring (``output`` is None once the session's live
    output is gone)."""
    if output is not None:
        in_file, ring, ring_start = output.history_parts()
    else:
        in_file = await trio.to_thread.run_sync(_file_size, path)
        ring, ring_start = b"", in_file
    if tail is not None:
        window = max(0, in_file - 4 * 1024 * 1024)
        head = await trio.to_thread.run_sync(_read_range, path, window, in_file)
        joined = head + (_GAP if in_file < ring_start else b"") + ring
        data = _tail_lines(joined, tail)
        if data:
            yield max(0, ring_start + len(ring) - len(data)), data
        return
    offset = 0
    while offset < in_file:
        end = min(in_file, offset + _READ_CHUNK)
        chunk = await trio.to_thread.run_sync(_read_range, path, offset, end)
        if not chunk:
            break
        yield offset, chunk
        offset += len(chunk)
    if in_file < ring_start:
        yield in_file, _GAP
    for start in range(0, len(ring), _READ_CHUNK):
        yield ring_start + start, ring[start : start + _READ_CHUNK]
